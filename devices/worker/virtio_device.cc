#include "devices/worker/virtio_device.h"

#include <algorithm>
#include <string>

namespace moss::runtime {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

VirtioDevice::VirtioDevice(VirtioSpec spec)
    : spec_(std::move(spec)),
      rings_(spec_.num_queues, spec_.name, spec_.ring_names),
      positions_(spec_.num_queues),
      expected_(spec_.num_queues) {
  MOSS_ASSERT(spec_.num_queues >= 1 && spec_.num_queues <= 256);
}

uint64_t VirtioDevice::protocol_features() const {
  return bit(pf::kConfig) | (spec_.max_state_bytes != 0 ? bit(pf::kDeviceState) : 0) | spec_.protocol_features;
}

Result<std::vector<uint8_t>> VirtioDevice::get_config(uint32_t offset, uint32_t size) {
  const std::vector<uint8_t>& space = spec_.config;
  if (offset > space.size() || size > space.size() - offset) {
    return make_error("frontend read " + spec_.name + " config bytes " + std::to_string(offset) + "+" +
                      std::to_string(size) + ", past its " + std::to_string(space.size()) + " bytes");
  }
  return std::vector<uint8_t>(space.begin() + offset, space.begin() + offset + size);
}

Result<void> VirtioDevice::set_config(uint32_t, std::span<const uint8_t>, uint32_t) {
  // No moss device offers a writable field (blk's `writeback` needs CONFIG_WCE).
  return make_error("the " + spec_.name + " config space is read-only");
}

// ---- Rings ----

Result<void> VirtioDevice::on_queue_started(uint32_t index, const vhost_user::Vring& vring) {
  MOSS_ASSERT(index < spec_.num_queues);
  MOSS_TRY(virtio::Queue* queue, rings_.start(index, vring, features_.acked()));
  auto refuse = [&](Error e) -> Result<void> {
    ring_stopping(index);
    rings_.discard(index);
    return e;
  };
  if (auto ok = ring_started(index, *queue); !ok.ok()) return refuse(std::move(ok).take_error());
  virtio::RingPosition& want = expected_[index];
  if (want.valid) {
    if (want.next_avail != queue->last_avail_idx() || want.used_idx != queue->used_idx()) {
      return refuse(make_error("queue " + std::to_string(index) + " resumes at available index " +
                               std::to_string(queue->last_avail_idx()) + " and used index " +
                               std::to_string(queue->used_idx()) + " but the restored state says " +
                               std::to_string(want.next_avail) + " and " + std::to_string(want.used_idx)));
    }
    want = virtio::RingPosition{};
  }
  if (vring.enabled) process(index);
  return {};
}

uint16_t VirtioDevice::on_queue_stopped(uint32_t index) {
  MOSS_ASSERT(index < spec_.num_queues && rings_.started(index));
  ring_stopping(index);
  const uint16_t used = rings_.queue(index).used_idx();
  const uint16_t next = rings_.stop(index);
  positions_[index] = virtio::RingPosition{true, next, used};
  return next;
}

void VirtioDevice::on_queue_enabled(uint32_t index, bool enabled) {
  // A disabled ring is left alone (no side effects); enabling it picks up what is waiting.
  if (enabled && rings_.started(index)) process(index);
}

void VirtioDevice::on_kick(uint32_t queue) {
  if (rings_.started(queue)) process(queue);
}

void VirtioDevice::on_memory_changing() {
  memory_changing();
  rings_.memory_changing();
}

void VirtioDevice::reset() {
  for (uint32_t q = 0; q < spec_.num_queues; q++) MOSS_ASSERT(!rings_.started(q));  // The Backend stopped them.
  features_.reset();
  std::fill(positions_.begin(), positions_.end(), virtio::RingPosition{});
  std::fill(expected_.begin(), expected_.end(), virtio::RingPosition{});
  driver_reset();
}

// ---- State ----

Result<std::vector<uint8_t>> VirtioDevice::save_state() {
  if (spec_.max_state_bytes == 0) return make_error("the " + spec_.name + " device cannot save its state");
  // The Backend saves only with every ring stopped: each stands where it stopped, or where a
  // loaded state says it will start.
  return write_state(virtio::CommonState{features_.saved(), positions_});
}

Result<void> VirtioDevice::load_state(std::span<const uint8_t> bytes) {
  if (spec_.max_state_bytes == 0) return make_error("the " + spec_.name + " device cannot load a saved state");
  MOSS_TRY(virtio::CommonState s, read_state(bytes));
  if (s.rings.size() != spec_.num_queues) {
    return make_error("the saved state has " + std::to_string(s.rings.size()) + " rings; this " + spec_.name +
                      " device has " + std::to_string(spec_.num_queues));
  }
  MOSS_TRY_VOID(features_.expect(s.acked_features));
  expected_ = s.rings;
  positions_ = s.rings;  // What a save reports until the rings start.
  state_loaded();
  return {};
}

Result<std::vector<uint8_t>> VirtioDevice::write_state(const virtio::CommonState&) const {
  MOSS_ASSERT(false);  // A spec with max_state_bytes comes with write_state and read_state.
  return make_error("");
}

Result<virtio::CommonState> VirtioDevice::read_state(std::span<const uint8_t>) const {
  MOSS_ASSERT(false);
  return make_error("");
}

}  // namespace moss::runtime
