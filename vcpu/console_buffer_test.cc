#include "vcpu/console_buffer.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/fd.h"

namespace moss {
namespace {

uint64_t wakeups(int ev) {
  uint64_t n = 0;
  return read(ev, &n, sizeof n) == sizeof n ? n : 0;
}

TEST(ConsoleBuffer, WakesOnlyWhenItStopsBeingEmpty) {
  UniqueFd ev(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(ev.valid());
  ConsoleBuffer c(ev.get());
  for (char ch : std::string("hello\n")) c.put(static_cast<uint8_t>(ch));
  EXPECT_EQ(wakeups(ev.get()), 1u);  // Six bytes, one wake-up: the loop may wait to batch.
  EXPECT_EQ(c.take(), "hello\n");
  EXPECT_EQ(c.take(), "");
  c.put('x');
  EXPECT_EQ(wakeups(ev.get()), 1u);
  EXPECT_EQ(c.take(), "x");
}

TEST(ConsoleBuffer, BytesBeyondTheBoundAreDroppedAndCounted) {
  UniqueFd ev(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ConsoleBuffer c(ev.get(), 8);
  for (int i = 0; i < 20; i++) c.put(static_cast<uint8_t>('a' + i));
  EXPECT_EQ(c.dropped(), 12u);
  EXPECT_EQ(c.take(), "abcdefgh");  // The oldest bytes are kept, in order.
  c.put('!');  // Room again once taken.
  EXPECT_EQ(c.take(), "!");
  EXPECT_EQ(c.dropped(), 12u);
  EXPECT_EQ(kConsoleMaxBytes, 4u << 20);
}

}  // namespace
}  // namespace moss
