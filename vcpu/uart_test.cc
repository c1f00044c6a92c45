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

TEST(UartState, ARestoredUartReadsAsTheSavedOneAndRaisesItsLine) {
  Harness h;
  h.uart.write(3, 0x80);  // DLAB: divisor 0x0201.
  h.uart.write(0, 0x01);
  h.uart.write(1, 0x02);
  h.uart.write(3, 0x03);
  h.uart.write(7, 0x77);
  h.uart.write(2, 0x01);
  h.uart.write(1, 0x01);  // Receive interrupts on.
  const uint8_t in[] = {'a', 'b'};
  h.uart.push_input(in);
  auto blob = h.uart.state();
  auto s = decode_uart_state(blob);
  ASSERT_TRUE(s) << s.error().message;

  Harness fresh;
  fresh.uart.restore(*s);
  ASSERT_FALSE(fresh.irqs.empty());
  EXPECT_TRUE(fresh.irqs.back());  // Data waits with its interrupt enabled.
  EXPECT_EQ(fresh.uart.state(), blob);
  EXPECT_EQ(fresh.uart.read(7), 0x77);
  EXPECT_EQ(fresh.uart.read(2) & 0xcf, 0xc4);  // FIFO on, receive data interrupt.
  EXPECT_EQ(fresh.uart.read(0), 'a');
  EXPECT_EQ(fresh.uart.read(0), 'b');
  fresh.uart.write(3, 0x80);
  EXPECT_EQ(fresh.uart.read(0), 0x01);
  EXPECT_EQ(fresh.uart.read(1), 0x02);
}

TEST(UartState, EachMalformedBlobIsRefusedWithItsReason) {
  Harness h;
  const std::vector<uint8_t> good = h.uart.state();
  auto with = [&](size_t at, uint8_t v) {
    auto b = good;
    b[at] = v;
    return b;
  };
  auto longer = good;
  longer.push_back(0);
  auto claims_rx = with(12, 1);  // Says one byte follows; none does.
  auto huge_rx = good;
  huge_rx[12] = 0x01;
  huge_rx[13] = 0x10;  // 4097 bytes.
  const struct {
    std::vector<uint8_t> blob;
    const char* reason;
  } cases[] = {
      {{}, "the saved UART state is truncated"},
      {{1, 0, 0}, "the saved UART state is truncated"},
      {with(0, 2), "the saved UART state has version 2, this moss reads 1"},
      {std::vector<uint8_t>(good.begin(), good.end() - 1), "the saved UART state is truncated"},
      {longer, "the saved UART state is 17 bytes, its header says 16"},
      {claims_rx, "the saved UART state is 16 bytes, its header says 17"},
      {huge_rx, "the saved UART receive buffer is larger than the UART's"},
      {with(10, 2), "a flag that is neither 0 nor 1"},
      {with(4, 0x10), "interrupt-enable register has reserved bits set"},
      {with(6, 0x20), "modem-control register has reserved bits set"},
  };
  for (const auto& c : cases) {
    auto r = decode_uart_state(c.blob);
    ASSERT_FALSE(r) << c.reason;
    EXPECT_NE(r.error().message.find(c.reason), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace moss
