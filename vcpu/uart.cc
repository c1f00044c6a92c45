#include "vcpu/uart.h"

#include <cstring>
#include <string>

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

namespace {
constexpr size_t kUartFixedBytes = 4 + 8 + 4;

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t get_u32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24; }
}  // namespace

std::vector<uint8_t> Uart::state() const {
  std::vector<uint8_t> out;
  put_u32(out, kUartStateVersion);
  for (uint8_t b : {ier_, lcr_, mcr_, scr_, dll_, dlm_, static_cast<uint8_t>(fifo_), static_cast<uint8_t>(thr_interrupt_)}) {
    out.push_back(b);
  }
  put_u32(out, static_cast<uint32_t>(rx_.size()));
  out.insert(out.end(), rx_.begin(), rx_.end());
  return out;
}

Result<UartState> decode_uart_state(std::span<const uint8_t> blob) {
  if (blob.size() < 4) return make_error("the saved UART state is truncated");
  if (uint32_t v = get_u32(blob.data()); v != kUartStateVersion) {
    return make_error("the saved UART state has version " + std::to_string(v) + ", this moss reads " +
                      std::to_string(kUartStateVersion));
  }
  if (blob.size() < kUartFixedBytes) return make_error("the saved UART state is truncated");
  const uint8_t* r = blob.data() + 4;
  UartState s;
  s.ier = r[0];
  s.lcr = r[1];
  s.mcr = r[2];
  s.scr = r[3];
  s.dll = r[4];
  s.dlm = r[5];
  if (r[6] > 1 || r[7] > 1) return make_error("the saved UART state has a flag that is neither 0 nor 1");
  s.fifo = r[6];
  s.thr_interrupt = r[7];
  if (s.ier & ~0x0f) return make_error("the saved UART interrupt-enable register has reserved bits set");
  if (s.mcr & ~0x1f) return make_error("the saved UART modem-control register has reserved bits set");
  uint32_t rx = get_u32(blob.data() + 12);
  if (rx > Uart::kRxCapacity) return make_error("the saved UART receive buffer is larger than the UART's");
  if (blob.size() != kUartFixedBytes + rx) {
    return make_error("the saved UART state is " + std::to_string(blob.size()) + " bytes, its header says " +
                      std::to_string(kUartFixedBytes + rx));
  }
  s.rx.assign(blob.begin() + kUartFixedBytes, blob.end());
  return s;
}

void Uart::restore(const UartState& s) {
  ier_ = s.ier;
  lcr_ = s.lcr;
  mcr_ = s.mcr;
  scr_ = s.scr;
  dll_ = s.dll;
  dlm_ = s.dlm;
  fifo_ = s.fifo;
  thr_interrupt_ = s.thr_interrupt;
  rx_.assign(s.rx.begin(), s.rx.end());
  irq_level_ = (iir() & kIirNone) == 0;
  irq_(irq_level_);
}

}  // namespace moss
