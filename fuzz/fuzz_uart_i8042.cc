// libFuzzer target: guest port accesses to the UART and i8042 models (the bytes a guest
// controls), checking the models' invariants: bounded buffers, a consistent interrupt line.
#include <cstddef>
#include <cstdint>

#include "vcpu/i8042.h"
#include "vcpu/uart.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bool level = false;
  moss::Uart uart([](uint8_t) {}, [&](bool l) {
    if (l == level) __builtin_trap();  // The model reports changes only.
    level = l;
  });
  moss::I8042 kbd;
  for (size_t i = 0; i + 2 < size; i += 3) {
    uint8_t op = data[i], reg = data[i + 1] & 7, value = data[i + 2];
    switch (op & 7) {
      case 0: uart.read(reg); break;
      case 1: uart.write(reg, value); break;
      case 2: uart.push_input({&data[i + 2], 1}); break;
      case 3: kbd.read_data(); break;
      case 4: kbd.write_data(value); break;
      case 5: kbd.write_command(value); break;
      default: kbd.read_status(); break;
    }
  }
  return 0;
}
