#include "devices/null/device.h"

#include "devices/null/request.h"

namespace moss::null {
namespace {

using vhost_user::bit;
using virtio::put_le;

// Virtio feature bits (virtio 1.2, 5.2.3 and 6).
constexpr int kSegMax = 2;
constexpr int kBlkSize = 6;
constexpr int kFlush = 9;
constexpr int kMq = 12;
using namespace virtio::feature;
constexpr uint32_t kSegMaxValue = 254;

std::vector<uint8_t> config_space(const Options& o) {
  std::vector<uint8_t> c(kConfigSize, 0);
  put_le<uint64_t>(c, 0, o.capacity_bytes / blk::kSectorSize);  // capacity
  put_le<uint32_t>(c, 12, kSegMaxValue);                        // seg_max
  put_le<uint32_t>(c, 20, static_cast<uint32_t>(blk::kSectorSize));  // blk_size
  put_le<uint16_t>(c, 34, static_cast<uint16_t>(o.num_queues));  // num_queues
  return c;
}

}  // namespace

NullDevice::NullDevice(Options options)
    : VirtioDevice({"virtio-blk (null)", bit(kVersion1) | bit(kEventIdx) | bit(kIndirectDesc) | bit(kFlush) |
                                             bit(kSegMax) | bit(kBlkSize) | bit(kMq),
                    0, options.num_queues, kMaxQueueSize, {}, config_space(options), 0}),
      options_(options) {}

void NullDevice::process(uint32_t q) {
  if (!rings().ready(q)) return;
  virtio::Queue& queue = rings().queue(q);
  const blk::DiskGeometry disk{options_.capacity_bytes / blk::kSectorSize, false, false, false};
  rings().take_available(q, [&](uint16_t head) {
    auto chain = virtio::walk_chain(rings().backend().memory(), rings().config(q), head);
    if (!chain.ok()) return rings().break_ring(q, chain.error().message);
    Answer a = answer_request(*chain, disk, options_.read_zeroes);
    if (!a.status) return rings().break_ring(q, "a chain has no room for the status byte");
    ++stats_.requests;
    if (*a.status != blk::kOk) {
      ++stats_.errors;
    } else if (a.type == blk::Type::kIn) {
      stats_.bytes_out += a.data_bytes;
    } else if (a.type == blk::Type::kOut) {
      stats_.bytes_in += a.data_bytes;
    }
    auto pushed = queue.push_used(head, a.used_len);
    if (!pushed.ok()) return rings().break_ring(q, pushed.error().message);
    rings().pushed(q);
  });
  rings().signal_used();
}

runtime::WorkerSpec worker_spec(Options options) {
  runtime::WorkerSpec spec;
  spec.description = {"null", options.num_queues, {{"capacityBytes", std::to_string(options.capacity_bytes)}}};
  spec.make_device = [options](event_base*) { return std::make_unique<NullDevice>(options); };
  return spec;
}

}  // namespace moss::null
