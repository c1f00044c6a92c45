#include "vcpu/i8042.h"

#include <cstddef>
#include <string>

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

std::vector<uint8_t> I8042::state() const {
  std::vector<uint8_t> out;
  for (int i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(kI8042StateVersion >> (8 * i)));
  out.push_back(command_byte_);
  out.push_back(pending_command_);
  out.push_back(static_cast<uint8_t>(output_.size()));
  out.insert(out.end(), output_.begin(), output_.end());
  return out;
}

Result<I8042State> decode_i8042_state(std::span<const uint8_t> blob) {
  constexpr size_t kFixed = 4 + 3;
  if (blob.size() < 4) return make_error("the saved i8042 state is truncated");
  uint32_t v = blob[0] | blob[1] << 8 | blob[2] << 16 | static_cast<uint32_t>(blob[3]) << 24;
  if (v != kI8042StateVersion) {
    return make_error("the saved i8042 state has version " + std::to_string(v) + ", this moss reads " +
                      std::to_string(kI8042StateVersion));
  }
  if (blob.size() < kFixed) return make_error("the saved i8042 state is truncated");
  I8042State s;
  s.command_byte = blob[4];
  s.pending_command = blob[5];
  if (s.pending_command != 0 && s.pending_command != kCmdWriteCommandByte && s.pending_command != kCmdWriteAux) {
    return make_error("the saved i8042 state waits for data of a command that takes none");
  }
  size_t n = blob[6];
  if (n > I8042::kMaxOutput) return make_error("the saved i8042 output buffer is larger than the controller's");
  if (blob.size() != kFixed + n) {
    return make_error("the saved i8042 state is " + std::to_string(blob.size()) + " bytes, its header says " +
                      std::to_string(kFixed + n));
  }
  s.output.assign(blob.begin() + kFixed, blob.end());
  return s;
}

void I8042::restore(const I8042State& s) {
  command_byte_ = s.command_byte;
  pending_command_ = s.pending_command;
  output_.assign(s.output.begin(), s.output.end());
}

}  // namespace moss
