// moss-null: a virtio-blk device with no disk, on the worker runtime (devices/worker/). Every
// request is parsed (request.h) and answered at once: reads give zeros, writes and flushes
// succeed and go nowhere. It measures what moss's vhost-user stack costs per request (the blk
// bench's transport-only row), and it is the smallest device built the way every moss device
// is: this folder, a policy (policies/null.policy), a fuzz target (fuzz/fuzz_null_request.cc).
#pragma once

#include <cstdint>
#include <memory>

#include "devices/worker/device.h"
#include "devices/worker/virtio_device.h"

namespace moss::null {

struct Options {
  uint64_t capacity_bytes = 0;  // A multiple of 512.
  uint32_t num_queues = 1;      // 1..256.
  // Reads fill the guest's buffers with zeros; off (--no-read-zeroes), they are left as they
  // are, as qemu's null-co with read-zeroes=off: the bench's transport row, where neither
  // peer touches the data.
  bool read_zeroes = true;
};

constexpr uint32_t kMaxQueueSize = 1024;
constexpr size_t kConfigSize = 60;  // struct virtio_blk_config up to write_zeroes_may_unmap.

class NullDevice final : public runtime::VirtioDevice {
 public:
  explicit NullDevice(Options options);

  // runtime::Device.
  runtime::Stats stats() const override { return stats_; }

 private:
  // runtime::VirtioDevice.
  void process(uint32_t q) override;

  const Options options_;
  runtime::Stats stats_;
};

// The WorkerSpec of moss-null.
runtime::WorkerSpec worker_spec(Options options);

}  // namespace moss::null
