#include "vcpu/uart.h"

namespace moss {
namespace {
// Register offsets.
constexpr uint8_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRdi = 0x01, kIerThri = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThri = 0x02, kIirRdi = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
}  // namespace

uint8_t Uart::iir() const {
  uint8_t v = kIirNone;
  if ((ier_ & kIerRdi) && !rx_.empty()) v = kIirRdi;
  else if ((ier_ & kIerThri) && thr_interrupt_) v = kIirThri;
  return static_cast<uint8_t>(v | (fifo_ ? kIirFifo : 0));
}

void Uart::update_irq() {
  bool level = (iir() & kIirNone) == 0;
  if (level != irq_level_) {
    irq_level_ = level;
    irq_(level);
  }
}

uint8_t Uart::read(uint8_t offset) {
  uint8_t v = 0;
  switch (offset) {
    case kData:
      if (lcr_ & kLcrDlab) return dll_;
      if (!rx_.empty()) {
        v = rx_.front();
        rx_.pop_front();
      }
      break;
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir:
      v = iir();
      if ((v & 0x0f) == kIirThri) thr_interrupt_ = false;  // Reading IIR acknowledges THRE.
      break;
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return static_cast<uint8_t>(kLsrThre | kLsrTemt | (rx_.empty() ? 0 : kLsrDr));
    case kMsr:
      if (mcr_ & kMcrLoop) {  // Loopback: modem outputs feed the modem inputs.
        return static_cast<uint8_t>(((mcr_ & 0x02) ? kMsrCts : 0) | ((mcr_ & 0x01) ? kMsrDsr : 0) |
                                    ((mcr_ & 0x04) ? kMsrRi : 0) | ((mcr_ & 0x08) ? kMsrDcd : 0));
      }
      return kMsrCts | kMsrDsr | kMsrDcd;  // A terminal is always attached.
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
  update_irq();
  return v;
}

void Uart::write(uint8_t offset, uint8_t value) {
  switch (offset) {
    case kData:
      if (lcr_ & kLcrDlab) {
        dll_ = value;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (rx_.size() < kRxCapacity) rx_.push_back(value);
      } else {
        out_(value);
      }
      thr_interrupt_ = true;  // The byte left at once: the holding register is empty again.
      break;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = value;
        return;
      }
      // Enabling THRE interrupts while the holding register is empty raises one at once
      // (Linux's 8250 driver checks this at start-up).
      if ((value & kIerThri) && !(ier_ & kIerThri)) thr_interrupt_ = true;
      ier_ = value & 0x0f;
      break;
    case kIir:  // FCR.
      fifo_ = value & 0x01;
      if (value & 0x02) rx_.clear();
      break;
    case kLcr:
      lcr_ = value;
      return;
    case kMcr:
      mcr_ = value & 0x1f;
      return;
    case kScr:
      scr_ = value;
      return;
    default:
      return;  // LSR and MSR are read-only.
  }
  update_irq();
}

size_t Uart::push_input(std::span<const uint8_t> bytes) {
  size_t n = 0;
  for (uint8_t b : bytes) {
    if (rx_.size() >= kRxCapacity) break;
    rx_.push_back(b);
    n++;
  }
  update_irq();
  return n;
}

}  // namespace moss
