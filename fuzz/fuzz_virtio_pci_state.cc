// libFuzzer target: the virtio-pci transport's saved-state decoder (vcpu/virtio_pci.h), which
// reads a spore's per-device transport blob in a restoring vcpu process. Whatever it accepts
// must have exactly one spelling (re-encoding gives the same bytes) and must be safe to apply
// to a fresh transport of the device it was checked against.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "vcpu/virtio_pci.h"

namespace {
class NullBackend : public moss::virtio_pci::VirtioBackend {
 public:
  moss::Result<void> read_config(uint32_t, std::span<uint8_t>) override { return {}; }
  moss::Result<void> write_config(uint32_t, std::span<const uint8_t>) override { return {}; }
  moss::Result<void> activate(uint64_t, std::span<const moss::virtio_pci::QueueState>) override { return {}; }
  moss::Result<void> reset() override { return {}; }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moss::virtio_pci;
  // The device of the seeds (vcpu/virtio_pci_state_test.cc): 2 queues of at most 128.
  const DeviceInfo info{2, 0x010000, (1ull << 9) | (1ull << 29), 2, 128, 60};
  auto s = decode_transport_state(std::span<const uint8_t>(data, size), info);
  if (!s.ok()) {
    if (s.error().message.empty()) __builtin_trap();  // Every refusal says why.
    return 0;
  }
  auto again = encode_transport_state(*s);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
  NullBackend b;
  Transport t(info, b, 0xc0000000);
  t.restore(*s);
  for (uint16_t q = 0; q < t.num_queues(); q++) (void)t.queue_interrupt(q);
  for (uint64_t off = 0; off < kCommonSize; off += 2) (void)t.read(off, 2);
  return 0;
}
