#include "vcpu/i8042.h"

#include <gtest/gtest.h>

namespace moss {
namespace {

TEST(I8042, CommandByteRoundTripsThroughTheOutputBuffer) {
  I8042 kbd;
  EXPECT_EQ(kbd.read_status() & 1, 0);
  EXPECT_EQ(kbd.read_status() & 0x10, 0x10);  // Not keylocked.
  EXPECT_FALSE(kbd.write_command(0x20));
  EXPECT_EQ(kbd.read_status() & 1, 1);
  EXPECT_EQ(kbd.read_data(), 0x45);
  EXPECT_EQ(kbd.read_status() & 1, 0);
  kbd.write_command(0x60);
  EXPECT_EQ(kbd.read_status() & 0x08, 0x08);
  kbd.write_data(0x74);
  kbd.write_command(0x20);
  EXPECT_EQ(kbd.read_data(), 0x74);
}

TEST(I8042, SelfTestsPass) {
  I8042 kbd;
  kbd.write_command(0xaa);
  EXPECT_EQ(kbd.read_data(), 0x55);
  kbd.write_command(0xab);
  EXPECT_EQ(kbd.read_data(), 0x00);
}

TEST(I8042, ResetPulseIsReportedAndOtherCommandsAreNot) {
  I8042 kbd;
  EXPECT_TRUE(kbd.write_command(0xfe));
  EXPECT_FALSE(kbd.write_command(0xad));
  EXPECT_FALSE(kbd.write_command(0x12));
}

TEST(I8042, OutputBufferIsBounded) {
  I8042 kbd;
  for (int i = 0; i < 100; i++) kbd.write_command(0xaa);
  int n = 0;
  while (kbd.read_status() & 1) {
    kbd.read_data();
    n++;
  }
  EXPECT_EQ(n, 16);
}

TEST(I8042State, ARestoredControllerAnswersAsTheSavedOne) {
  I8042 kbd;
  kbd.write_command(0xad);  // Keyboard off: command byte 0x55.
  kbd.write_command(0xaa);  // Self test: 0x55 waits in the output buffer.
  kbd.write_command(0x60);  // Waits for the new command byte.
  auto blob = kbd.state();
  auto s = decode_i8042_state(blob);
  ASSERT_TRUE(s) << s.error().message;
  I8042 fresh;
  fresh.restore(*s);
  EXPECT_EQ(fresh.state(), blob);
  EXPECT_EQ(fresh.read_status() & 0x09, 0x09);  // Output full, command pending.
  EXPECT_EQ(fresh.read_data(), 0x55);
  fresh.write_data(0x47);
  fresh.write_command(0x20);
  EXPECT_EQ(fresh.read_data(), 0x47);
}

TEST(I8042State, EachMalformedBlobIsRefusedWithItsReason) {
  const std::vector<uint8_t> good = I8042().state();
  auto with = [&](size_t at, uint8_t v) {
    auto b = good;
    b[at] = v;
    return b;
  };
  auto longer = good;
  longer.push_back(0);
  const struct {
    std::vector<uint8_t> blob;
    const char* reason;
  } cases[] = {
      {{}, "the saved i8042 state is truncated"},
      {with(1, 1), "the saved i8042 state has version 257, this moss reads 1"},
      {std::vector<uint8_t>(good.begin(), good.end() - 1), "the saved i8042 state is truncated"},
      {longer, "the saved i8042 state is 8 bytes, its header says 7"},
      {with(6, 2), "the saved i8042 state is 7 bytes, its header says 9"},
      {with(6, 17), "the saved i8042 output buffer is larger than the controller's"},
      {with(5, 0xaa), "waits for data of a command that takes none"},
  };
  for (const auto& c : cases) {
    auto r = decode_i8042_state(c.blob);
    ASSERT_FALSE(r) << c.reason;
    EXPECT_NE(r.error().message.find(c.reason), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace moss
