#include "cmdline.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moss::guest {
namespace {

using Strings = std::vector<std::string>;

TEST(EncodeTest, ArgvExample) {
  EXPECT_EQ(encode_argv({"sh", "-c", "exit 7"}),
            "7368002d630065786974203700");
}

TEST(EncodeTest, EmptyStringsAndHighBytes) {
  EXPECT_EQ(encode_strings({}), "");
  EXPECT_EQ(encode_strings({""}), "00");
  EXPECT_EQ(encode_strings({"\xff\x01 "}), "ff012000");
}

TEST(EncodeTest, Cmdline) {
  EXPECT_EQ(encode_cmdline({"true"}), "moss.argv=7472756500");
  EXPECT_EQ(encode_cmdline({"true"}, {"A=1"}, "/tmp"),
            "moss.argv=7472756500 moss.env=413d3100 moss.cwd=2f746d7000");
}

TEST(DecodeTest, RoundTrip) {
  Strings in = {"sh", "-c", "echo 'a b' \"$X\"\n\t;", "", "\x7f\xfe"};
  Strings out;
  std::string err;
  ASSERT_TRUE(decode_strings(encode_strings(in), &out, &err)) << err;
  EXPECT_EQ(out, in);
}

TEST(DecodeTest, UppercaseAccepted) {
  Strings out;
  std::string err;
  ASSERT_TRUE(decode_strings("4A6B00", &out, &err)) << err;
  EXPECT_EQ(out, Strings{"Jk"});
}

TEST(DecodeTest, Errors) {
  Strings out;
  std::string err;
  EXPECT_FALSE(decode_strings("7", &out, &err));
  EXPECT_NE(err.find("odd"), std::string::npos) << err;
  EXPECT_FALSE(decode_strings("7g00", &out, &err));
  EXPECT_NE(err.find("bad hex"), std::string::npos) << err;
  EXPECT_FALSE(decode_strings("7368", &out, &err));
  EXPECT_NE(err.find("trailing NUL"), std::string::npos) << err;
  EXPECT_FALSE(decode_strings("73680073", &out, &err));
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(decode_strings("0x00", &out, &err));
}

TEST(ParseTest, NoArgv) {
  ParseResult r = parse_cmdline("console=ttyS0 quiet panic=-1\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.command.has_argv);
  EXPECT_TRUE(r.command.argv.empty());
  EXPECT_TRUE(r.command.env.empty());
  EXPECT_EQ(r.command.cwd, "");
}

TEST(ParseTest, Full) {
  std::string line = "console=ttyS0 " +
                     encode_cmdline({"sh", "-c", "exit 7"}, {"A=1", "B="},
                                    "/tmp") +
                     " quiet\n";
  ParseResult r = parse_cmdline(line);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.command.has_argv);
  EXPECT_EQ(r.command.argv, (Strings{"sh", "-c", "exit 7"}));
  EXPECT_EQ(r.command.env, (Strings{"A=1", "B="}));
  EXPECT_EQ(r.command.cwd, "/tmp");
}

TEST(ParseTest, LastOccurrenceWins) {
  ParseResult r = parse_cmdline("moss.argv=zz moss.argv=7472756500");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.command.argv, Strings{"true"});
}

TEST(ParseTest, SimilarKeysIgnored) {
  ParseResult r = parse_cmdline("xmoss.argv=zz moss.argvx=zz moss.argv.x=1");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.command.has_argv);
}

TEST(ParseTest, Tabs) {
  ParseResult r = parse_cmdline("\tmoss.argv=7472756500\t\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.command.argv, Strings{"true"});
}

void ExpectError(const std::string& line, const std::string& needle) {
  ParseResult r = parse_cmdline(line);
  EXPECT_FALSE(r.ok) << line;
  EXPECT_NE(r.error.find(needle), std::string::npos)
      << line << " -> " << r.error;
  EXPECT_EQ(r.error.find('\n'), std::string::npos) << r.error;
  EXPECT_FALSE(r.command.has_argv);
  EXPECT_TRUE(r.command.argv.empty());
}

TEST(ParseTest, Errors) {
  ExpectError("moss.argv=", "empty argv");
  ExpectError("moss.argv", "empty argv");
  ExpectError("moss.argv=00", "empty argv[0]");
  ExpectError("moss.argv=747", "odd");
  ExpectError("moss.argv=74zz00", "bad hex");
  ExpectError("moss.argv=7472", "trailing NUL");
  ExpectError("moss.argv=7472756500 moss.env=4100", "KEY=VALUE");
  ExpectError("moss.argv=7472756500 moss.env=3d3100", "KEY=VALUE");
  ExpectError("moss.argv=7472756500 moss.env=41", "moss.env");
  ExpectError("moss.argv=7472756500 moss.cwd=", "moss.cwd");
  ExpectError("moss.argv=7472756500 moss.cwd=00", "moss.cwd");
  ExpectError("moss.argv=7472756500 moss.cwd=2f002f00", "moss.cwd");
  ExpectError("moss.argv=7472756500 moss.cwd=2f", "trailing NUL");
}

TEST(ParseTest, EmptyEnvIsFine) {
  ParseResult r = parse_cmdline("moss.argv=7472756500 moss.env=");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.command.env.empty());
}

}  // namespace
}  // namespace moss::guest
