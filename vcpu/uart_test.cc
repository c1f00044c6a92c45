#include "vcpu/uart.h"

#include <gtest/gtest.h>

#include <string>

namespace moss {
namespace {

struct Harness {
  std::string out;
  std::vector<bool> irqs;
  Uart uart{[this](uint8_t b) { out.push_back(static_cast<char>(b)); }, [this](bool l) { irqs.push_back(l); }};
};

TEST(Uart, TransmitsBytesAndReportsThreAlwaysEmpty) {
  Harness h;
  h.uart.write(0, 'h');
  h.uart.write(0, 'i');
  EXPECT_EQ(h.out, "hi");
  EXPECT_EQ(h.uart.read(5) & 0x60, 0x60);
  EXPECT_TRUE(h.irqs.empty());  // Interrupts are disabled.
}

TEST(Uart, EnablingThreInterruptRaisesAndIirReadAcknowledges) {
  Harness h;
  h.uart.write(1, 0x02);
  ASSERT_EQ(h.irqs, std::vector<bool>{true});
  EXPECT_EQ(h.uart.read(2) & 0x0f, 0x02);
  EXPECT_EQ(h.irqs, (std::vector<bool>{true, false}));
  EXPECT_EQ(h.uart.read(2) & 0x0f, 0x01);  // Nothing pending now.
  h.uart.write(0, 'x');                    // A transmitted byte empties THR again.
  EXPECT_EQ(h.irqs.back(), true);
}

TEST(Uart, ReceivedBytesRaiseDataReadyAndAreReadInOrder) {
  Harness h;
  h.uart.write(1, 0x01);
  const uint8_t in[] = {'a', 'b'};
  EXPECT_EQ(h.uart.push_input(in), 2u);
  EXPECT_EQ(h.irqs.back(), true);
  EXPECT_EQ(h.uart.read(5) & 1, 1);
  EXPECT_EQ(h.uart.read(2) & 0x0f, 0x04);
  EXPECT_EQ(h.uart.read(0), 'a');
  EXPECT_EQ(h.uart.read(0), 'b');
  EXPECT_EQ(h.uart.read(5) & 1, 0);
  EXPECT_EQ(h.irqs.back(), false);
}

TEST(Uart, DivisorLatchAndScratchAndLoopback) {
  Harness h;
  h.uart.write(3, 0x80);
  h.uart.write(0, 0x01);
  h.uart.write(1, 0x00);
  EXPECT_EQ(h.uart.read(0), 0x01);
  h.uart.write(3, 0x03);
  h.uart.write(7, 0x5a);
  EXPECT_EQ(h.uart.read(7), 0x5a);
  h.uart.write(4, 0x10 | 0x0a);  // Loopback with RTS and OUT2.
  EXPECT_EQ(h.uart.read(6), 0x10 | 0x80);
  h.uart.write(0, 'z');  // Loops back into the receiver, not to the host.
  EXPECT_EQ(h.out, "");
  EXPECT_EQ(h.uart.read(0), 'z');
}

TEST(Uart, FifoEnableShowsInIir) {
  Harness h;
  h.uart.write(2, 0x01);
  EXPECT_EQ(h.uart.read(2) & 0xc0, 0xc0);
}

TEST(Uart, ReceiveFifoIsBounded) {
  Harness h;
  std::vector<uint8_t> big(Uart::kRxCapacity + 10, 'q');
  EXPECT_EQ(h.uart.push_input(big), Uart::kRxCapacity);
}

}  // namespace
}  // namespace moss
