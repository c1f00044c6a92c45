#include "devices/virtio/rings.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace moss::virtio {
namespace {
constexpr uint64_t kIndirectDesc = uint64_t{1} << feature::kIndirectDesc;
constexpr uint64_t kEventIdx = uint64_t{1} << feature::kEventIdx;
}  // namespace

void signal_eventfd(const UniqueFd& fd) {
  if (!fd.valid()) return;
  uint64_t one = 1;
  // EAGAIN: the counter is saturated, so the reader will wake anyway. Other errors mean the
  // frontend gave us a broken fd; nothing to do but not crash.
  if (::write(fd.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    LOG_DEBUG("%s", sys_message("signal", "an eventfd", errno).c_str());
  }
}

RingSet::RingSet(uint32_t count, std::string device, std::vector<std::string> names)
    : device_(std::move(device)), names_(std::move(names)), rings_(count) {
  MOSS_ASSERT(names_.empty() || names_.size() == count);
}

std::string RingSet::name(uint32_t q) const { return names_.empty() ? "queue " + std::to_string(q) : "the " + names_[q] + " queue"; }

Result<Queue*> RingSet::start(uint32_t q, const vhost_user::Vring& vring, uint64_t acked) {
  MOSS_ASSERT(backend_ != nullptr && q < rings_.size() && rings_[q].vring == nullptr);
  Ring r;
  r.config = QueueConfig{static_cast<uint16_t>(vring.num), vring.desc_gpa, vring.avail_gpa, vring.used_gpa,
                         (acked & kEventIdx) != 0, (acked & kIndirectDesc) != 0};
  MOSS_TRY(Queue queue, Queue::create(backend_->memory(), r.config));
  queue.set_last_avail_idx(vring.base);
  r.queue = std::move(queue);
  r.vring = &vring;
  rings_[q] = std::move(r);
  return &*rings_[q].queue;
}

void RingSet::discard(uint32_t q) { rings_[q] = Ring{}; }

uint16_t RingSet::stop(uint32_t q) {
  MOSS_ASSERT(started(q));
  uint16_t next = rings_[q].queue->last_avail_idx();
  rings_[q] = Ring{};
  return next;
}

void RingSet::memory_changing() {
  for (auto& r : rings_) {
    if (r.vring != nullptr) r.stale = true;
  }
}

bool RingSet::ready(uint32_t q) {
  Ring& r = rings_[q];
  if (r.vring == nullptr || !r.vring->enabled || r.broken) return false;
  if (!r.stale) return true;
  auto fresh = Queue::create(backend_->memory(), r.config);
  if (!fresh.ok()) {
    break_ring(q, "after the memory table changed: " + fresh.error().message);
    return false;
  }
  fresh->set_last_avail_idx(r.queue->last_avail_idx());
  r.queue = std::move(*fresh);
  r.stale = false;
  return true;
}

void RingSet::break_ring(uint32_t q, const std::string& why) {
  Ring& r = rings_[q];
  if (r.broken) return;
  r.broken = true;
  LOG_WARN("%s %s stops until the driver resets the device: %s", device_.c_str(), name(q).c_str(), why.c_str());
  if (r.vring != nullptr) signal_eventfd(r.vring->err);
}

void RingSet::signal_used() {
  for (auto& r : rings_) {
    if (!r.notify || r.vring == nullptr) continue;
    r.notify = false;
    if (r.queue->needs_notification()) signal_eventfd(r.vring->call);
  }
}

}  // namespace moss::virtio
