// moss-null: a virtio-blk device with no disk, on the worker runtime (devices/worker/). Every
// request is parsed (request.h) and answered at once: reads give zeros, writes and flushes
// succeed and go nowhere. It measures what moss's vhost-user stack costs per request (the blk
// bench's transport-only row), and it is the smallest device built the way every moss device
// is: this folder, a policy (policies/null.policy), a fuzz target (fuzz/fuzz_null_request.cc).
#pragma once

#include <cstdint>
#include <memory>

#include "devices/blk/request.h"
#include "devices/virtio/rings.h"
#include "devices/worker/device.h"

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

class NullDevice final : public runtime::Device {
 public:
  explicit NullDevice(Options options);

  // runtime::Device.
  void attach(const vhost_user::Backend& backend) override { rings_.attach(backend); }
  void on_kick(uint32_t queue) override;
  runtime::Stats stats() const override;

  // DeviceInterface.
  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return options_.num_queues; }
  uint32_t max_queue_size() const override { return kMaxQueueSize; }
  Result<void> set_features(uint64_t acked) override;
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override;
  Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) override;
  Result<void> on_queue_started(uint32_t index, const vhost_user::Vring& vring) override;
  uint16_t on_queue_stopped(uint32_t index) override;
  void on_queue_enabled(uint32_t index, bool enabled) override;
  void on_memory_changing() override { rings_.memory_changing(); }
  void reset() override { acked_ = 0; }

 private:
  void process(uint32_t q);

  const Options options_;
  uint64_t acked_ = 0;
  virtio::RingSet rings_;
  runtime::Stats stats_;
};

// The WorkerSpec of moss-null.
runtime::WorkerSpec worker_spec(Options options);

}  // namespace moss::null
