#include "broker/console_sink.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace moss {
namespace {

void put(ConsoleSink& s, const std::string& text) { s.write(reinterpret_cast<const uint8_t*>(text.data()), text.size()); }

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("moss-console-" + std::to_string(getpid()) + "-" + name)).string();
}

TEST(ConsoleSink, KeepsTheLastWholeLinesWithoutCarriageReturns) {
  auto s = ConsoleSink::open(false, "");
  ASSERT_TRUE(s.ok()) << s.error().message;
  put(*s, "moss-init: ready\r\n");
  put(*s, "a line in two ");
  put(*s, "writes\r\n");
  EXPECT_EQ(s->tail(), "moss-init: ready\na line in two writes\n");
  // Far more than the tail holds: what is left starts at a line, and ends with the last one.
  for (int i = 0; i < 5000; i++) put(*s, "line " + std::to_string(i) + "\r\n");
  std::string tail = s->tail();
  EXPECT_LE(tail.size(), ConsoleSink::kTailBytes);
  EXPECT_GT(tail.size(), ConsoleSink::kTailBytes / 2);
  EXPECT_EQ(tail.rfind("line ", 0), 0u) << tail.substr(0, 40);
  EXPECT_EQ(tail.substr(tail.size() - 10), "line 4999\n");
  EXPECT_EQ(tail.find('\r'), std::string::npos);
}

TEST(ConsoleSink, AppendsToTheConsoleFile) {
  std::string path = temp_path("append.log");
  { std::ofstream(path) << "before\n"; }
  {
    auto s = ConsoleSink::open(false, path);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(s->file(), path);
    put(*s, "from the guest\r\n");
  }
  std::ifstream in(path);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_EQ(got.str(), "before\nfrom the guest\r\n");  // The file gets the bytes as the guest sent them.
  std::filesystem::remove(path);
}

TEST(ConsoleSink, AFileThatCannotBeOpenedIsOneSentence) {
  std::string path = temp_path("no-such-dir") + "/console.log";
  auto s = ConsoleSink::open(true, path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "cannot open the --console file " + path + ": No such file or directory");
}

TEST(ConsoleSink, AFifoWithoutAReaderIsRefusedAtOnceAndOneWithAReaderGetsTheConsole) {
  std::string path = temp_path("fifo");
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  auto none = ConsoleSink::open(false, path);  // Must not wait for a reader.
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message, "nobody is reading the FIFO " + path + " given to --console; start its reader first");
  int reader = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  {
    auto s = ConsoleSink::open(false, path);
    ASSERT_TRUE(s.ok()) << s.error().message;
    put(*s, "to the fifo\n");
    // A reader that never reads: the console's writes fail instead of blocking the broker.
    std::string lots(1 << 20, 'x');
    put(*s, lots);
    s->remove_if_unused();  // Not ours: stays.
  }
  char buf[12] = {};
  EXPECT_EQ(read(reader, buf, 12), 12);
  EXPECT_EQ(std::string(buf, 12), "to the fifo\n");
  close(reader);
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  unlink(path.c_str());
}

TEST(ConsoleSink, DirectoriesAreRefusedAndAFileItCreatedGoesIfTheVmNeverRan) {
  std::string dir = temp_path("dir");
  std::filesystem::create_directories(dir);
  auto d = ConsoleSink::open(false, dir);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message.find("cannot open the --console file " + dir), std::string::npos) << d.error().message;
  std::filesystem::remove(dir);
  std::string path = temp_path("created.log");
  {
    auto s = ConsoleSink::open(false, path);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(std::filesystem::exists(path));
    s->remove_if_unused();
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  { std::ofstream(path) << "a log of before\n"; }
  {
    auto s = ConsoleSink::open(false, path);
    ASSERT_TRUE(s.ok()) << s.error().message;
    s->remove_if_unused();  // The user's own file stays.
  }
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove(path);
  auto tty = ConsoleSink::open(false, "/dev/null");  // A character device is fine.
  EXPECT_TRUE(tty.ok()) << tty.error().message;
}

}  // namespace
}  // namespace moss
