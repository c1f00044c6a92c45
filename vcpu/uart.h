// A 16550A UART as seen by a guest driver at 0x3f8 (COM1): enough of the register set for
// Linux's 8250 driver (autoconfig, FIFO, THRE and receive interrupts, loopback MSR).
//
// The model is pure: register accesses in, bytes out through `out`, the interrupt line level
// through `irq`. Thread-safety is the caller's (one mutex around the device).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <vector>

#include "base/result.h"

namespace moss {

// What a save holds of the UART: every guest-visible register and the receive FIFO (the
// interrupt line's level follows from them).
struct UartState {
  uint8_t ier = 0, lcr = 0, mcr = 0, scr = 0, dll = 0x0c, dlm = 0;
  bool fifo = false, thr_interrupt = false;
  std::vector<uint8_t> rx;
};

// The blob Uart::state() writes (little-endian): u32 version (kUartStateVersion), then ier,
// lcr, mcr, scr, dll, dlm, fifo (0/1), thr_interrupt (0/1), u32 rx length, the rx bytes.
// Pure; refuses another version, a short or long blob, bad flags and an rx beyond capacity.
inline constexpr uint32_t kUartStateVersion = 1;
Result<UartState> decode_uart_state(std::span<const uint8_t> blob);

class Uart {
 public:
  using OutputFn = std::function<void(uint8_t)>;
  using IrqFn = std::function<void(bool level)>;

  Uart(OutputFn out, IrqFn irq) : out_(std::move(out)), irq_(std::move(irq)) {}

  uint8_t read(uint8_t offset);
  void write(uint8_t offset, uint8_t value);
  // Bytes from the host terminal; returns how many were accepted (the FIFO is bounded).
  size_t push_input(std::span<const uint8_t> bytes);

  static constexpr size_t kRxCapacity = 4096;

  std::vector<uint8_t> state() const;
  // Takes a decoded state over and drives the interrupt line to the level it implies.
  void restore(const UartState& s);

 private:
  uint8_t iir() const;
  void update_irq();

  OutputFn out_;
  IrqFn irq_;
  uint8_t ier_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0, dll_ = 0x0c, dlm_ = 0;
  bool fifo_ = false;
  bool thr_interrupt_ = false;  // THRE interrupt pending until IIR is read or THR written.
  bool irq_level_ = false;
  std::deque<uint8_t> rx_;
};

}  // namespace moss
