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

}  // namespace
}  // namespace moss
