#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "base/result.h"
#include "base/syscall.h"

namespace moss {
namespace {

Result<int> fails_with(Error e) { return e; }
Result<int> gives(int v) { return v; }

Result<int> doubled(Result<int> in) {
  MOSS_TRY(int v, std::move(in));
  return 2 * v;
}

Result<int> doubled_in_context(Result<int> in, int* contexts_built) {
  auto context = [&] {
    ++*contexts_built;
    return std::string("doubling the answer");
  };
  MOSS_TRY_CTX(int v, std::move(in), context());
  return 2 * v;
}

Result<void> stops_at_first_error(Result<int> a, Result<int> b, int* reached) {
  MOSS_TRY_VOID(std::move(a));
  ++*reached;
  MOSS_TRY_VOID_CTX(std::move(b), "the second step");
  ++*reached;
  return {};
}

TEST(Result, TryBindsTheValueOrReturnsTheErrorUnchanged) {
  EXPECT_EQ(*doubled(gives(21)), 42);
  auto r = doubled(fails_with(Error("the disk is gone", EIO)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the disk is gone");
  EXPECT_EQ(r.error().err, EIO);
}

TEST(Result, ContextIsBuiltOnlyOnErrorAndKeepsErrnoAndKind) {
  int built = 0;
  EXPECT_EQ(*doubled_in_context(gives(2), &built), 4);
  EXPECT_EQ(built, 0);
  auto r = doubled_in_context(fails_with(timeout_error("nobody answered within 5 s")), &built);
  EXPECT_EQ(built, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "doubling the answer: nobody answered within 5 s");
  EXPECT_TRUE(r.error().is_timeout());
  EXPECT_EQ(r.error().err, ETIMEDOUT);
}

TEST(Result, TryVoidReturnsTheFirstErrorWithItsContext) {
  int reached = 0;
  EXPECT_TRUE(stops_at_first_error(gives(1), gives(2), &reached).ok());
  EXPECT_EQ(reached, 2);
  reached = 0;
  auto first = stops_at_first_error(fails_with(Error("first")), gives(2), &reached);
  EXPECT_EQ(reached, 0);
  EXPECT_EQ(first.error().message, "first");
  auto second = stops_at_first_error(gives(1), fails_with(Error("broken", EPIPE)), &reached);
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(second.error().message, "the second step: broken");
  EXPECT_EQ(second.error().err, EPIPE);
}

TEST(Result, ContextMethodPrefixesErrorsOnly) {
  EXPECT_EQ(*gives(7).context("unused"), 7);
  auto r = fails_with(Error("no space left")).context("saving the spore");
  EXPECT_EQ(r.error().message, "saving the spore: no space left");
  Result<void> v = Result<void>(Error("gone")).context("the worker");
  EXPECT_EQ(v.error().message, "the worker: gone");
  EXPECT_TRUE(Result<void>().context("unused").ok());
}

TEST(Error, TimeoutIsAKindNotAMessage) {
  EXPECT_TRUE(timeout_error("the child did not start within 2 s").is_timeout());
  EXPECT_TRUE(Error("no answer", ETIMEDOUT).is_timeout());  // An ETIMEDOUT from a call.
  EXPECT_FALSE(Error("timeout").is_timeout());               // The word is not the kind.
  EXPECT_FALSE(Error("refused", ECONNREFUSED).is_timeout());
  EXPECT_EQ(Error("x").kind, Error::Kind::kFailed);
}

TEST(SysError, NamesTheOperationTheObjectAndErrnoOnce) {
  ASSERT_LT(::open("/nonexistent/moss-disk", O_RDONLY | O_CLOEXEC), 0);
  Error e = sys_error("open", "/nonexistent/moss-disk");
  EXPECT_EQ(e.message, "cannot open /nonexistent/moss-disk: No such file or directory");
  EXPECT_EQ(e.err, ENOENT);
  EXPECT_FALSE(e.is_timeout());
  EXPECT_EQ(sys_error_code(EACCES, "read").message, "cannot read: Permission denied");
  EXPECT_TRUE(sys_error_code(ETIMEDOUT, "connect to", "the starter").is_timeout());
}

TEST(SysError, ErrnoErrorPutsTheTextAfterItsContext) {
  ASSERT_LT(::close(-1), 0);
  Error e = errno_error("poll failed");
  EXPECT_EQ(e.message, "poll failed: Bad file descriptor");
  EXPECT_EQ(e.err, EBADF);
  EXPECT_EQ(errno_error_code(EIO, "/x/chunk").message, "/x/chunk: Input/output error");
  EXPECT_TRUE(errno_error_code(ETIMEDOUT, "the starter could not connect").is_timeout());
  EXPECT_EQ(errno_message("KVM_RUN failed on vCPU 1", EFAULT), "KVM_RUN failed on vCPU 1: Bad address");
  EXPECT_EQ(sys_message("write", "--stats file /s", ENOSPC), "cannot write --stats file /s: No space left on device");
  EXPECT_EQ(errno_text(EDQUOT), "Disk quota exceeded");
}

TEST(SysError, MossSysKeepsTheCallAsWritten) {
  auto r = MOSS_SYS(::close(-1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "::close(-1) failed: Bad file descriptor");
  EXPECT_EQ(r.error().err, EBADF);
}

}  // namespace
}  // namespace moss
