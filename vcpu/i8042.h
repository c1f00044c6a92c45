// The i8042 keyboard controller, as far as a guest without a keyboard needs it: the
// controller commands Linux's probe uses (read/write the command byte, self tests, port
// enable/disable) answered through the output buffer, and the 0xfe reset pulse. Without
// answers, Linux's i8042 driver waits for time-outs at boot.
//
// Pure: port accesses in, a reset request out (the return value of write_command()).
#pragma once

#include <cstdint>
#include <deque>

namespace moss {

class I8042 {
 public:
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;

  uint8_t read_data();
  uint8_t read_status() const;
  void write_data(uint8_t value);
  // Returns true when the command pulses the CPU reset line.
  bool write_command(uint8_t command);

 private:
  uint8_t command_byte_ = 0x45;  // Keyboard interrupt on, system flag, translation.
  uint8_t pending_command_ = 0;  // A command waiting for its data byte on port 0x60.
  std::deque<uint8_t> output_;
};

}  // namespace moss
