// ChildSpec::pass_fd: the number it returns is the fd the child has, whatever the order or
// number of fds passed; a fd not passed is closed in the child.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include "base/fd.h"
#include "broker/jail.h"
#include "broker/launcher.h"

namespace moss {
namespace {

std::string build_dir() {
  const char* d = std::getenv("MOSS_BUILD_DIR");
  return d ? d : ".";
}

UniqueFd memfd(const char* name) { return UniqueFd(memfd_create(name, MFD_CLOEXEC)); }

// Runs fd_report with `spec` (unjailed) and returns fd number -> target, and "open" -> count.
std::map<std::string, std::string> report(ChildSpec& spec, const std::vector<int>& numbers) {
  int err[2];
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  UniqueFd r(err[0]), w(err[1]);
  spec.path = build_dir() + "/moss_fd_report";
  spec.argv = {"moss_fd_report"};
  for (int n : numbers) spec.argv.push_back(std::to_string(n));
  spec.stderr_fd = w.get();
  spec.sandbox = jail::vcpu(1, 0, 0, 64 << 20, /*enabled=*/false);
  auto pid = spawn_child(spec);
  EXPECT_TRUE(pid.ok()) << pid.error().message;
  if (!pid) return {};
  waitpid(*pid, nullptr, 0);
  w.reset();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(r.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  std::map<std::string, std::string> m;
  std::istringstream in(out);
  std::string key, value;
  while (in >> key >> std::ws && std::getline(in, value)) m[key] = value;
  return m;
}

TEST(ChildFds, PassFdReturnsTheNumberTheChildHas) {
  UniqueFd a = memfd("moss-fd-a"), b = memfd("moss-fd-b"), c = memfd("moss-fd-c");
  // Passed in an order unlike their numbers here, one twice.
  ChildSpec spec;
  int nc = spec.pass_fd(c.get());
  int na = spec.pass_fd(a.get());
  int nc2 = spec.pass_fd(c.get());
  int nb = spec.pass_fd(b.get());
  EXPECT_EQ(spec.fds.size(), 4u);
  EXPECT_NE(na, nb);
  auto m = report(spec, {na, nb, nc, nc2});
  EXPECT_EQ(m[std::to_string(na)], "/memfd:moss-fd-a (deleted)");
  EXPECT_EQ(m[std::to_string(nb)], "/memfd:moss-fd-b (deleted)");
  EXPECT_EQ(m[std::to_string(nc)], "/memfd:moss-fd-c (deleted)");
  EXPECT_EQ(m[std::to_string(nc2)], "/memfd:moss-fd-c (deleted)");
  // The four passed and nothing else (the launcher's report pipe, after them, is closed once
  // the child has reported).
  EXPECT_EQ(m["open"], "4");
}

TEST(ChildFds, AnFdNotPassedIsClosedInTheChild) {
  UniqueFd a = memfd("moss-fd-a");
  int inheritable = dup(a.get());  // Without CLOEXEC: only the launcher's closing stops it.
  ASSERT_GE(inheritable, 0);
  UniqueFd keep(inheritable);
  ChildSpec spec;
  int na = spec.pass_fd(a.get());
  auto m = report(spec, {na, inheritable});
  EXPECT_EQ(m[std::to_string(na)], "/memfd:moss-fd-a (deleted)");
  if (inheritable != na && inheritable != spec.fds.next()) {
    EXPECT_EQ(m[std::to_string(inheritable)], "closed");
  }
  EXPECT_EQ(m["open"], "1");
}

}  // namespace
}  // namespace moss
