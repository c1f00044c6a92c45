#include "vcpu/i8042.h"

#include <cstddef>

namespace moss {
namespace {
// Status bit 4 set means the keyboard is not inhibited (no keylock), which Linux checks.
constexpr uint8_t kStatusOutputFull = 0x01, kStatusSystemFlag = 0x04, kStatusCommand = 0x08, kStatusUnlocked = 0x10;
constexpr uint8_t kCmdReadCommandByte = 0x20, kCmdWriteCommandByte = 0x60;
constexpr uint8_t kCmdDisableAux = 0xa7, kCmdEnableAux = 0xa8, kCmdTestAux = 0xa9;
constexpr uint8_t kCmdSelfTest = 0xaa, kCmdTestKeyboard = 0xab;
constexpr uint8_t kCmdDisableKeyboard = 0xad, kCmdEnableKeyboard = 0xae;
constexpr uint8_t kCmdWriteAux = 0xd4, kCmdPulseReset = 0xfe;
constexpr uint8_t kSelfTestPassed = 0x55, kPortTestPassed = 0x00;
constexpr size_t kMaxOutput = 16;
}  // namespace

uint8_t I8042::read_data() {
  if (output_.empty()) return 0;
  uint8_t v = output_.front();
  output_.pop_front();
  return v;
}

uint8_t I8042::read_status() const {
  return static_cast<uint8_t>(kStatusSystemFlag | kStatusUnlocked | (pending_command_ ? kStatusCommand : 0) |
                              (output_.empty() ? 0 : kStatusOutputFull));
}

void I8042::write_data(uint8_t value) {
  if (pending_command_ == kCmdWriteCommandByte) command_byte_ = value;
  // Bytes for the (absent) keyboard or mouse, and data for kCmdWriteAux, are dropped.
  pending_command_ = 0;
}

bool I8042::write_command(uint8_t command) {
  auto reply = [this](uint8_t v) {
    if (output_.size() < kMaxOutput) output_.push_back(v);
  };
  pending_command_ = 0;
  switch (command) {
    case kCmdReadCommandByte: reply(command_byte_); break;
    case kCmdWriteCommandByte:
    case kCmdWriteAux: pending_command_ = command; break;
    case kCmdSelfTest: reply(kSelfTestPassed); break;
    case kCmdTestKeyboard:
    case kCmdTestAux: reply(kPortTestPassed); break;
    case kCmdDisableKeyboard: command_byte_ |= 0x10; break;
    case kCmdEnableKeyboard: command_byte_ &= static_cast<uint8_t>(~0x10); break;
    case kCmdDisableAux: command_byte_ |= 0x20; break;
    case kCmdEnableAux: command_byte_ &= static_cast<uint8_t>(~0x20); break;
    case kCmdPulseReset: return true;
    default: break;  // Unknown commands are ignored, as on most controllers.
  }
  return false;
}

}  // namespace moss
