#include "broker/console_sink.h"

#include <gtest/gtest.h>
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

}  // namespace
}  // namespace moss
