#include "vhost-user/backend_cli.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

namespace moss::vhost_user {
namespace {

// A device with one flag (--quiet) and one number (--level, 1 to 9).
struct Parsed {
  BackendArgs args;
  bool quiet = false;
  uint64_t level = 0;
};

Result<Parsed> parse(std::vector<const char*> argv) {
  Parsed p;
  auto own = [&p](Option& opt) -> Result<bool> {
    if (opt.name() == "--quiet") {
      MOSS_TRY_VOID(opt.flag());
      p.quiet = true;
    } else if (opt.name() == "--level") {
      MOSS_TRY(p.level, opt.number(1, 9, "a level from 1 to 9"));
    } else {
      return false;
    }
    return true;
  };
  MOSS_TRY_VOID(parse_backend_cli(argv, &p.args, own));
  return p;
}

void refused(std::vector<const char*> argv, const std::string& needle) {
  auto r = parse(argv);
  ASSERT_FALSE(r.ok()) << needle;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
}

TEST(BackendCli, SharedAndDeviceOptionsInBothSpellings) {
  auto r = parse({"--socket-path", "/run/b.sock", "--quiet", "--level=7"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->args.mode, BackendArgs::Mode::kServe);
  EXPECT_EQ(r->args.socket_path, "/run/b.sock");
  EXPECT_EQ(r->args.fd, -1);
  EXPECT_TRUE(r->quiet);
  EXPECT_EQ(r->level, 7u);
  r = parse({"--fd=5", "--level", "1"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->args.fd, 5);
  EXPECT_TRUE(r->args.socket_path.empty());
  EXPECT_EQ(r->level, 1u);
}

TEST(BackendCli, HelpAndCapabilitiesNeedNoSocket) {
  auto r = parse({"--print-capabilities"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->args.mode, BackendArgs::Mode::kPrintCapabilities);
  r = parse({"--help"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->args.mode, BackendArgs::Mode::kHelp);
}

TEST(BackendCli, CapabilitiesAreQemusJsonObject) {
  EXPECT_EQ(capabilities_json("block", {"read-only", "blk-file"}),
            "{\"type\": \"block\", \"features\": [\"read-only\", \"blk-file\"]}\n");
  EXPECT_EQ(capabilities_json("vsock", {}), "{\"type\": \"vsock\", \"features\": []}\n");
}

TEST(BackendCli, BadUsageIsOneSentenceNamingTheOption) {
  refused({}, "give --socket-path PATH or --fd N");
  refused({"--quiet"}, "give --socket-path PATH or --fd N");
  refused({"--fd", "3", "--socket-path", "/s"}, "give --socket-path or --fd, not both");
  refused({"--fd", "three"}, "--fd needs a file descriptor number, not 'three'");
  refused({"--fd", "-1"}, "--fd needs a file descriptor number, not '-1'");
  refused({"--fd", "1073741825"}, "--fd needs a file descriptor number");
  refused({"--fd"}, "option --fd needs a value");
  refused({"--socket-path="}, "--socket-path needs a non-empty path");
  refused({"--fd", "3", "--quiet=yes"}, "option --quiet takes no value");
  refused({"--help=me"}, "option --help takes no value");
  refused({"--fd", "3", "--level", "0"}, "--level needs a level from 1 to 9, not '0'");
  refused({"--fd", "3", "--level", "10"}, "--level needs a level from 1 to 9, not '10'");
  refused({"--fd", "3", "--level", "5x"}, "not '5x'");
  refused({"--fd", "3", "--level", ""}, "not ''");
  refused({"--fd", "3", "--frobnicate"}, "unknown option '--frobnicate'");
  refused({"--fd", "3", "--frobnicate=1"}, "unknown option '--frobnicate'");
  refused({"--fd", "3", "stray"}, "unexpected argument 'stray'");
  refused({"-h"}, "use --help");
}

TEST(BackendCli, AdoptSocketTakesOnlyASocketAndSetsCloexec) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UniqueFd peer(sv[1]);
  auto s = adopt_socket(sv[0], "--fd");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->get(), sv[0]);
  EXPECT_TRUE(fcntl(s->get(), F_GETFD) & FD_CLOEXEC);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  auto bad = adopt_socket(p[0], "--fd");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "--fd " + std::to_string(p[0]) + " is not an open socket");
  auto closed = adopt_socket(1000, "--control-fd");
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.error().message, "--control-fd 1000 is not an open socket");
}

}  // namespace
}  // namespace moss::vhost_user
