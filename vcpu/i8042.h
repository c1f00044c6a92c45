// The i8042 keyboard controller, as far as a guest without a keyboard needs it: the
// controller commands Linux's probe uses (read/write the command byte, self tests, port
// enable/disable) answered through the output buffer, and the 0xfe reset pulse. Without
// answers, Linux's i8042 driver waits for time-outs at boot.
//
// Pure: port accesses in, a reset request out (the return value of write_command()).
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "base/result.h"

namespace moss {

struct I8042State {
  uint8_t command_byte = 0x45;
  uint8_t pending_command = 0;  // 0, or the command waiting for its data byte (0x60, 0xd4).
  std::vector<uint8_t> output;  // At most I8042::kMaxOutput bytes.
};

// The blob I8042::state() writes: u32 version (kI8042StateVersion, little-endian), the command
// byte, the pending command, the output buffer's length (one byte) and its bytes. Pure;
// refuses another version, a short or long blob, an unknown pending command and an output
// buffer beyond the controller's.
inline constexpr uint32_t kI8042StateVersion = 1;
Result<I8042State> decode_i8042_state(std::span<const uint8_t> blob);

class I8042 {
 public:
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;

  uint8_t read_data();
  uint8_t read_status() const;
  void write_data(uint8_t value);
  // Returns true when the command pulses the CPU reset line.
  bool write_command(uint8_t command);

  static constexpr size_t kMaxOutput = 16;
  std::vector<uint8_t> state() const;
  void restore(const I8042State& s);

 private:
  uint8_t command_byte_ = 0x45;  // Keyboard interrupt on, system flag, translation.
  uint8_t pending_command_ = 0;  // A command waiting for its data byte on port 0x60.
  std::deque<uint8_t> output_;
};

}  // namespace moss
