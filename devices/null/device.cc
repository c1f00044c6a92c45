#include "devices/null/device.h"

#include "devices/null/request.h"

namespace moss::null {
namespace {

using vhost_user::bit;

// Virtio feature bits (virtio 1.2, 5.2.3 and 6).
constexpr int kSegMax = 2;
constexpr int kBlkSize = 6;
constexpr int kFlush = 9;
constexpr int kMq = 12;
using namespace virtio::feature;
constexpr uint32_t kSegMaxValue = 254;

template <typename T>
void put(std::vector<uint8_t>& c, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); i++) c[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

}  // namespace

NullDevice::NullDevice(Options options) : options_(options), rings_(options.num_queues, "virtio-blk (null)") {
  MOSS_ASSERT(options_.num_queues >= 1 && options_.num_queues <= 256);
}

uint64_t NullDevice::features() const {
  return bit(kVersion1) | bit(kEventIdx) | bit(kIndirectDesc) | bit(kFlush) | bit(kSegMax) | bit(kBlkSize) | bit(kMq);
}

uint64_t NullDevice::protocol_features() const { return bit(vhost_user::protocol_feature::kConfig); }

Result<void> NullDevice::set_features(uint64_t acked) {
  acked_ = acked;
  return {};
}

Result<std::vector<uint8_t>> NullDevice::get_config(uint32_t offset, uint32_t size) {
  std::vector<uint8_t> c(kConfigSize, 0);
  put<uint64_t>(c, 0, options_.capacity_bytes / blk::kSectorSize);  // capacity
  put<uint32_t>(c, 12, kSegMaxValue);                                // seg_max
  put<uint32_t>(c, 20, static_cast<uint32_t>(blk::kSectorSize));     // blk_size
  put<uint16_t>(c, 34, static_cast<uint16_t>(options_.num_queues));  // num_queues
  return runtime::config_read(c, offset, size, "virtio-blk");
}

Result<void> NullDevice::set_config(uint32_t, std::span<const uint8_t>, uint32_t) {
  return make_error("the virtio-blk config space is read-only");
}

Result<void> NullDevice::on_queue_started(uint32_t index, const vhost_user::Vring& vring) {
  MOSS_TRY_VOID(rings_.start(index, vring, acked_));
  if (vring.enabled) process(index);
  return {};
}

uint16_t NullDevice::on_queue_stopped(uint32_t index) { return rings_.stop(index); }  // Nothing is ever in flight.

void NullDevice::on_queue_enabled(uint32_t index, bool enabled) {
  if (enabled && rings_.started(index)) process(index);
}

void NullDevice::on_kick(uint32_t queue) {
  if (rings_.started(queue)) process(queue);
}

void NullDevice::process(uint32_t q) {
  if (!rings_.ready(q)) return;
  virtio::Queue& queue = rings_.queue(q);
  const blk::DiskGeometry disk{options_.capacity_bytes / blk::kSectorSize, false, false, false};
  // At most one ring's worth per call, so one busy queue cannot starve the others.
  uint32_t budget = rings_.config(q).size;
  for (;;) {
    queue.disable_notification();
    while (budget > 0) {
      auto chain = queue.pop();
      if (!chain.ok()) return rings_.break_ring(q, chain.error().message);
      if (!*chain) break;
      --budget;
      Answer a = answer_request(**chain, disk, options_.read_zeroes);
      if (!a.status) return rings_.break_ring(q, "a chain has no room for the status byte");
      ++stats_.requests;
      if (*a.status != blk::kOk) {
        ++stats_.errors;
      } else if (a.type == blk::Type::kIn) {
        stats_.bytes_out += a.data_bytes;
      } else if (a.type == blk::Type::kOut) {
        stats_.bytes_in += a.data_bytes;
      }
      auto pushed = queue.push_used((*chain)->head, a.used_len);
      if (!pushed.ok()) return rings_.break_ring(q, pushed.error().message);
      rings_.pushed(q);
    }
    if (budget == 0) {
      rings_.kick_self(q);
      break;
    }
    if (!queue.enable_notification()) break;
  }
  rings_.signal_used();
}

runtime::Stats NullDevice::stats() const { return stats_; }

runtime::WorkerSpec worker_spec(Options options) {
  runtime::WorkerSpec spec;
  spec.description = {"null", options.num_queues, {{"capacityBytes", std::to_string(options.capacity_bytes)}}};
  spec.make_device = [options](event_base*) { return std::make_unique<NullDevice>(options); };
  return spec;
}

}  // namespace moss::null
