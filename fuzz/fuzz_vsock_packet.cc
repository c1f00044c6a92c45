// libFuzzer target: the virtio-vsock packet parser and the connection table, driven by a
// script of guest packets (transmit chains cut from fuzz input) and host events: CONNECT, a
// socket turning readable, reads, writes, EOF, failures, time passing. The format and the
// checks (devices/vsock/script.h) trap when the table breaks a promise: a data packet larger
// than the guest's credit or the receive buffer, more guest bytes buffered than the credit
// granted, more connections or owed RSTs than the limits, a malformed header to the guest.
// Seeds, including every malformed case of the harness acceptance test (bad lengths, unknown
// ops, wrong CIDs, credit violations), are built by devices/vsock/fuzz_seeds_test.cc.
#include <cstddef>
#include <cstdint>

#include "devices/vsock/script.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)moss::vsock::testing::run_script({data, size});
  return 0;
}
