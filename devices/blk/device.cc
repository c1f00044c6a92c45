#include "devices/blk/device.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/file.h"
#include "base/log.h"
#include "base/syscall.h"

namespace moss::blk {
namespace {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

constexpr uint64_t fbit(int n) { return uint64_t{1} << n; }

template <typename T>
void put(std::array<uint8_t, kConfigSize>& c, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); i++) c[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

Engine::Tag make_tag(uint32_t q, uint16_t head) { return (Engine::Tag{q} << 16) | head; }

void signal_fd(const UniqueFd& fd) {
  if (!fd.valid()) return;
  uint64_t one = 1;
  // EAGAIN: the counter is saturated, so the reader will wake anyway. Other errors mean the
  // frontend gave us a broken fd; nothing to do but not crash.
  if (::write(fd.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    LOG_DEBUG("cannot signal an eventfd: %s", std::strerror(errno));
  }
}

}  // namespace

std::array<uint8_t, kConfigSize> config_space(const DiskInfo& disk, uint32_t num_queues) {
  std::array<uint8_t, kConfigSize> c{};
  const uint32_t per_phys = disk.physical_block_size / kSectorSize;  // 1..128
  put<uint64_t>(c, 0, disk.capacity_sectors);
  put<uint32_t>(c, 8, kMaxSegmentBytes);
  put<uint32_t>(c, 12, kMaxSegments);
  // 16: geometry, not offered (VIRTIO_BLK_F_GEOMETRY).
  put<uint32_t>(c, 20, static_cast<uint32_t>(kSectorSize));  // blk_size: logical block.
  c[24] = static_cast<uint8_t>(std::countr_zero(per_phys));   // physical_block_exp
  c[25] = 0;                                                  // alignment_offset
  put<uint16_t>(c, 26, static_cast<uint16_t>(per_phys));      // min_io_size, in logical blocks
  put<uint32_t>(c, 28, disk.opt_io_size / static_cast<uint32_t>(kSectorSize));  // opt_io_size
  // 32: writeback, meaningful only with VIRTIO_BLK_F_CONFIG_WCE (not offered: we always cache
  // and honour flushes).
  put<uint16_t>(c, 34, static_cast<uint16_t>(num_queues));
  put<uint32_t>(c, 36, kMaxDiscardSectors);
  put<uint32_t>(c, 40, kMaxDiscardSegments);
  put<uint32_t>(c, 44, per_phys);  // discard_sector_alignment: punch whole blocks.
  put<uint32_t>(c, 48, kMaxDiscardSectors);
  put<uint32_t>(c, 52, kMaxDiscardSegments);
  c[56] = 1;  // write_zeroes_may_unmap
  // 60..95: secure erase and zoned, not offered.
  return c;
}

Result<void> check_state_fits(const SavedState& s, const DiskInfo& disk, const std::string& serial,
                              uint32_t num_queues) {
  auto differs = [](const std::string& what) { return make_error("the saved state is for a disk with another " + what); };
  if (s.capacity_sectors != disk.capacity_sectors) return differs("capacity");
  if (s.read_only != disk.read_only) return differs("read-only setting");
  if (s.serial != serial) return differs("serial");
  if (s.queues.size() != num_queues) return differs("number of queues");
  return {};
}

Counters& Counters::operator+=(const Counters& o) {
  read_requests += o.read_requests;
  write_requests += o.write_requests;
  flush_requests += o.flush_requests;
  other_requests += o.other_requests;
  bytes_read += o.bytes_read;
  bytes_written += o.bytes_written;
  errors += o.errors;
  return *this;
}

BlkDevice::BlkDevice(const Disk& disk, Engine& engine, DeviceOptions options)
    : disk_(disk),
      engine_(engine),
      serial_(options.serial.empty() ? disk.info().serial : options.serial),
      config_(config_space(disk.info(), options.num_queues)),
      queues_(options.num_queues),
      positions_(options.num_queues) {
  MOSS_ASSERT(options.num_queues >= 1 && options.num_queues <= 256);
  MOSS_ASSERT(serial_.size() <= kIdBytes);
}

BlkDevice::~BlkDevice() {
  // The Backend stops every ring (draining it) before it goes; a device destroyed with I/O
  // in flight would let the kernel write into memory that is about to be unmapped.
  for (const auto& q : queues_) MOSS_ASSERT(q.in_flight == 0);
}

uint64_t BlkDevice::features() const {
  using namespace feature;
  uint64_t f = fbit(kSizeMax) | fbit(kSegMax) | fbit(kBlkSize) | fbit(kFlush) | fbit(kTopology) | fbit(kMq) |
               fbit(kDiscard) | fbit(kWriteZeroes) | fbit(kIndirectDesc) | fbit(kEventIdx) | fbit(kVersion1);
  // DISCARD and WRITE_ZEROES stay offered on a read-only disk (as QEMU does): a driver that
  // sends them anyway gets IOERR, as for any write (5.2.6.2).
  if (disk_.info().read_only) f |= fbit(kRo);
  return f;
}

uint64_t BlkDevice::protocol_features() const {
  return bit(pf::kConfig) | bit(pf::kInflightShmfd) | bit(pf::kDeviceState);
}

Result<void> BlkDevice::set_features(uint64_t acked) {
  // A legacy driver (no VERSION_1) is served too: on x86 its rings and requests are the same
  // bytes, and the parser takes any descriptor layout.
  if (expected_features_ && acked != *expected_features_) {
    return make_error("the driver's features differ from those in the saved state being restored");
  }
  acked_ = acked;
  return {};
}

Result<std::vector<uint8_t>> BlkDevice::get_config(uint32_t offset, uint32_t size) {
  if (offset > kConfigSize || size > kConfigSize - offset) {
    return make_error("frontend read virtio-blk config bytes " + std::to_string(offset) + "+" + std::to_string(size) +
                      ", past its " + std::to_string(kConfigSize) + " bytes");
  }
  return std::vector<uint8_t>(config_.begin() + offset, config_.begin() + offset + size);
}

Result<void> BlkDevice::set_config(uint32_t, std::span<const uint8_t>, uint32_t) {
  // The only writable field is `writeback`, which needs VIRTIO_BLK_F_CONFIG_WCE.
  return make_error("the virtio-blk config space is read-only");
}

DiskGeometry BlkDevice::geometry() const {
  return DiskGeometry{disk_.info().capacity_sectors, disk_.info().read_only,
                      (acked_ & fbit(feature::kDiscard)) != 0, (acked_ & fbit(feature::kWriteZeroes)) != 0};
}

// ---- Rings ----

Result<void> BlkDevice::on_queue_started(uint32_t index, const vhost_user::Vring& vring) {
  MOSS_ASSERT(backend_ != nullptr && index < queues_.size());
  QueueState& qs = queues_[index];
  MOSS_ASSERT(qs.vring == nullptr && qs.in_flight == 0);
  qs = QueueState{};
  qs.config = virtio::QueueConfig{static_cast<uint16_t>(vring.num), vring.desc_gpa, vring.avail_gpa, vring.used_gpa,
                                  (acked_ & fbit(feature::kEventIdx)) != 0,
                                  (acked_ & fbit(feature::kIndirectDesc)) != 0};
  MOSS_TRY(virtio::Queue queue, virtio::Queue::create(backend_->memory(), qs.config));
  queue.set_last_avail_idx(vring.base);

  vhost_user::InflightArea area = backend_->inflight();
  if (area.data != nullptr && (backend_->acked_protocol_features() & bit(pf::kInflightShmfd))) {
    if (index >= area.num_queues) {
      return make_error("the inflight buffer covers " + std::to_string(area.num_queues) + " queues, not queue " +
                        std::to_string(index));
    }
    uint64_t per_queue = vhost_user::Backend::inflight_queue_region_size(area.queue_size);
    MOSS_ASSERT(per_queue * area.num_queues <= area.size);  // The Backend checked the geometry.
    std::span<uint8_t> region(area.data + per_queue * index, per_queue);
    MOSS_TRY(InflightTracker t, InflightTracker::attach(region, area.queue_size, qs.config.size, queue.used_idx()));
    if (!t.fresh()) {
      uint16_t next = t.next_avail(queue.used_idx());
      if (next != vring.base) {
        LOG_INFO("queue %u resumes at available index %u from the inflight buffer (%zu requests to resubmit), "
                 "not at %u", index, next, t.resubmit().size(), vring.base);
      }
      queue.set_last_avail_idx(next);
      qs.resubmit = t.resubmit();
    }
    qs.inflight = std::move(t);
    qs.inflight_base = area.data;
  }

  if (index < expected_positions_.size() && expected_positions_[index].valid) {
    const QueuePosition& want = expected_positions_[index];
    if (want.next_avail != queue.last_avail_idx() || want.used_idx != queue.used_idx()) {
      return make_error("queue " + std::to_string(index) + " resumes at available index " +
                        std::to_string(queue.last_avail_idx()) + " and used index " + std::to_string(queue.used_idx()) +
                        " but the restored state says " + std::to_string(want.next_avail) + " and " +
                        std::to_string(want.used_idx));
    }
    expected_positions_[index] = QueuePosition{};
  }

  qs.slots.resize(qs.config.size);
  qs.queue = std::move(queue);
  qs.vring = &vring;
  if (vring.enabled) process(index);
  return {};
}

uint16_t BlkDevice::on_queue_stopped(uint32_t index) {
  MOSS_ASSERT(index < queues_.size());
  QueueState& qs = queues_[index];
  MOSS_ASSERT(qs.vring != nullptr);
  drain(index);
  uint16_t next = qs.queue->last_avail_idx();
  positions_[index] = QueuePosition{true, next, qs.queue->used_idx()};
  qs = QueueState{};
  return next;
}

void BlkDevice::on_queue_enabled(uint32_t index, bool enabled) {
  // A disabled ring is left alone (no side effects); enabling it picks up what is waiting.
  if (enabled && index < queues_.size() && queues_[index].vring != nullptr) process(index);
}

void BlkDevice::on_memory_changing() {
  // Requests point into the old mapping, and so do the rings: finish the I/O now, and
  // rebuild each ring on the new table before it is touched again.
  for (uint32_t q = 0; q < queues_.size(); q++) {
    if (queues_[q].vring == nullptr) continue;
    drain(q);
    queues_[q].stale = true;
  }
}

void BlkDevice::reset() {
  for (const auto& q : queues_) MOSS_ASSERT(q.vring == nullptr);  // The Backend stopped them.
  acked_ = 0;
  std::fill(positions_.begin(), positions_.end(), QueuePosition{});
  expected_features_.reset();
  expected_positions_.clear();
}

void BlkDevice::on_kick(uint32_t queue) {
  if (queue < queues_.size() && queues_[queue].vring != nullptr) process(queue);
}

bool BlkDevice::refresh(uint32_t q) {
  QueueState& qs = queues_[q];
  if (!qs.stale) return true;
  MOSS_ASSERT(qs.in_flight == 0);  // on_memory_changing drained.
  auto fresh = virtio::Queue::create(backend_->memory(), qs.config);
  if (!fresh.ok()) {
    break_queue(q, "after the memory table changed: " + fresh.error().message);
    return false;
  }
  fresh->set_last_avail_idx(qs.queue->last_avail_idx());
  qs.queue = std::move(*fresh);
  qs.stale = false;
  return true;
}

InflightTracker* BlkDevice::tracker(uint32_t q) {
  QueueState& qs = queues_[q];
  if (!qs.inflight) return nullptr;
  // A frontend that replaces the inflight buffer while the ring runs (SET_INFLIGHT_FD) has
  // unmapped the one we track: stop tracking rather than write into a stale pointer.
  if (backend_->inflight().data != qs.inflight_base) {
    LOG_WARN("the frontend replaced the inflight buffer while queue %u runs; inflight tracking stops", q);
    qs.inflight.reset();
    return nullptr;
  }
  return &*qs.inflight;
}

void BlkDevice::process(uint32_t q) {
  QueueState& qs = queues_[q];
  // Quiesced: the kick that brought us here is dropped; set_quiesced(false) looks again.
  if (quiesced_ || qs.broken || !qs.vring->enabled || !refresh(q)) return;
  // Requests a previous backend left in flight go first, in the order it took them.
  std::vector<uint16_t> resubmit;
  resubmit.swap(qs.resubmit);
  for (uint16_t head : resubmit) {
    if (!qs.broken) start_request(q, head);
  }
  // At most one ring's worth per call, so one busy queue cannot starve the others or the
  // control socket; a self-kick brings us back after the loop has served them.
  uint32_t budget = qs.config.size;
  bool more = false;
  for (;;) {
    qs.queue->disable_notification();
    while (!qs.broken && budget > 0) {
      auto head = qs.queue->pop_head();
      if (!head.ok()) {
        break_queue(q, head.error().message);
        break;
      }
      if (!*head) break;
      --budget;
      if (qs.slots[**head].busy) {
        break_queue(q, "the driver offered head " + std::to_string(**head) + " again while it is in flight");
        break;
      }
      if (InflightTracker* t = tracker(q)) t->mark(**head);
      start_request(q, **head);
    }
    if (qs.broken) break;
    if (budget == 0) {
      more = true;
      break;
    }
    if (!qs.queue->enable_notification()) break;
  }
  engine_.submit();
  signal_used();
  if (more) signal_fd(qs.vring->kick);
}

void BlkDevice::start_request(uint32_t q, uint16_t head) {
  QueueState& qs = queues_[q];
  auto chain = virtio::walk_chain(backend_->memory(), qs.config, head);
  if (!chain.ok()) return break_queue(q, chain.error().message);
  Parsed p = parse_request(*chain, geometry());
  if (p.error && p.error->status_byte.empty()) return break_queue(q, p.error->message);

  Slot& s = qs.slots[head];
  MOSS_ASSERT(!s.busy);
  s = Slot{};
  s.busy = true;
  s.used_len = 1;
  ++qs.in_flight;
  if (p.error) {
    LOG_DEBUG("queue %u head %u: %s", q, head, p.error->message.c_str());
    s.status = p.error->status;
    s.status_byte = p.error->status_byte;
    return complete(q, head);
  }
  Request& r = *p.request;
  s.status_byte = r.status;
  switch (r.type) {
    case Type::kIn: s.kind = Kind::kRead; s.bytes = r.data_bytes; break;
    case Type::kOut: s.kind = Kind::kWrite; s.bytes = r.data_bytes; break;
    case Type::kFlush: s.kind = Kind::kFlush; break;
    default: s.kind = Kind::kOther; break;
  }
  const Engine::Tag tag = make_tag(q, head);
  const uint64_t offset = r.sector * kSectorSize;  // parse_request checked the range.
  switch (r.type) {
    case Type::kIn:
      s.used_len = static_cast<uint32_t>(r.data_bytes + 1);
      s.pending = 1;
      engine_.read(tag, offset, r.in_data);
      return;
    case Type::kOut:
      s.pending = 1;
      engine_.write(tag, offset, r.out_data, write_through());
      return;
    case Type::kFlush:
      s.pending = 1;
      engine_.flush(tag);
      return;
    case Type::kGetId: {
      // The serial, NUL-padded to 20 bytes, cut to the buffer the driver gave.
      std::array<uint8_t, kIdBytes> id{};
      std::memcpy(id.data(), serial_.data(), serial_.size());
      uint64_t n = std::min<uint64_t>(r.data_bytes, kIdBytes);
      uint64_t done = 0;
      for (auto seg : r.in_data) {
        if (done == n) break;
        uint64_t take = std::min<uint64_t>(seg.size(), n - done);
        std::memcpy(seg.data(), id.data() + done, take);
        done += take;
      }
      s.used_len = static_cast<uint32_t>(n + 1);
      return complete(q, head);
    }
    case Type::kDiscard:
    case Type::kWriteZeroes:
      s.pending = static_cast<uint32_t>(r.ranges.size());
      for (const Range& range : r.ranges) {
        uint64_t off = range.sector * kSectorSize, len = uint64_t{range.sectors} * kSectorSize;
        if (r.type == Type::kDiscard) {
          engine_.discard(tag, off, len, write_through());
        } else {
          engine_.write_zeroes(tag, off, len, range.unmap, write_through());
        }
      }
      return;
  }
}

void BlkDevice::on_done(Engine::Tag tag, int res) {
  uint32_t q = static_cast<uint32_t>(tag >> 16);
  uint16_t head = static_cast<uint16_t>(tag & 0xffff);
  MOSS_ASSERT(q < queues_.size() && head < queues_[q].slots.size());
  Slot& s = queues_[q].slots[head];
  MOSS_ASSERT(s.busy && s.pending > 0);
  if (res < 0) {
    LOG_DEBUG("queue %u head %u: disk I/O failed: %s", q, head, std::strerror(-res));
    s.status = kIoErr;
  }
  if (--s.pending == 0) complete(q, head);
}

void BlkDevice::complete(uint32_t q, uint16_t head) {
  QueueState& qs = queues_[q];
  MOSS_ASSERT(!qs.stale);  // Memory changes drain first, so nothing completes on a stale ring.
  Slot& s = qs.slots[head];
  // On failure only the status byte counts as written (len may understate, never overstate).
  if (s.status != kOk) s.used_len = 1;
  s.status_byte[0] = s.status;
  count(s);
  InflightTracker* t = tracker(q);
  if (t != nullptr) t->before_push(head);
  auto pushed = qs.queue->push_used(head, s.used_len);
  s = Slot{};
  --qs.in_flight;
  if (!pushed.ok()) {
    // Our count of taken heads disagrees with used->idx: the guest wrote the used index,
    // which only the device may write.
    return break_queue(q, pushed.error().message);
  }
  if (t != nullptr) t->after_push(head, qs.queue->used_idx());
  qs.notify = true;
}

void BlkDevice::count(const Slot& s) {
  switch (s.kind) {
    case Kind::kRead:
      ++counters_.read_requests;
      if (s.status == kOk) counters_.bytes_read += s.bytes;
      break;
    case Kind::kWrite:
      ++counters_.write_requests;
      if (s.status == kOk) counters_.bytes_written += s.bytes;
      break;
    case Kind::kFlush: ++counters_.flush_requests; break;
    case Kind::kOther: ++counters_.other_requests; break;
  }
  if (s.status != kOk) ++counters_.errors;
}

void BlkDevice::signal_used() {
  for (auto& qs : queues_) {
    if (!qs.notify) continue;
    qs.notify = false;
    if (qs.queue->needs_notification()) signal_fd(qs.vring->call);
  }
}

void BlkDevice::on_io_ready() {
  engine_.poll([this](Engine::Tag tag, int res) { on_done(tag, res); });
  signal_used();
}

void BlkDevice::drain(uint32_t q) {
  while (queues_[q].in_flight > 0) engine_.wait([this](Engine::Tag tag, int res) { on_done(tag, res); });
  signal_used();
}

void BlkDevice::break_queue(uint32_t q, const std::string& why) {
  QueueState& qs = queues_[q];
  if (qs.broken) return;
  qs.broken = true;
  LOG_WARN("virtio-blk queue %u stops until the driver resets the device: %s", q, why.c_str());
  signal_fd(qs.vring->err);
}

// ---- Quiescing and state ----

void BlkDevice::set_quiesced(bool quiesced) {
  if (quiesced_ == quiesced) return;
  quiesced_ = quiesced;
  if (quiesced) return;
  for (uint32_t q = 0; q < queues_.size(); q++) {
    if (queues_[q].vring != nullptr) process(q);
  }
}

uint32_t BlkDevice::in_flight() const {
  uint32_t n = 0;
  for (const auto& q : queues_) n += q.in_flight;
  return n;
}

SavedState BlkDevice::state() const {
  MOSS_ASSERT(in_flight() == 0);
  SavedState s;
  s.acked_features = acked_ != 0 ? acked_ : expected_features_.value_or(0);
  s.capacity_sectors = disk_.info().capacity_sectors;
  s.read_only = disk_.info().read_only;
  s.serial = serial_;
  s.queues = positions_;
  for (uint32_t q = 0; q < queues_.size(); q++) {
    const QueueState& qs = queues_[q];
    if (qs.vring != nullptr) s.queues[q] = QueuePosition{true, qs.queue->last_avail_idx(), qs.queue->used_idx()};
  }
  return s;
}

Result<void> BlkDevice::restore(const SavedState& s) {
  MOSS_ASSERT(in_flight() == 0);
  MOSS_CHECK(check_state_fits(s, disk_.info(), serial_, num_queues()));
  if (acked_ != 0 && acked_ != s.acked_features) {
    return make_error("the driver's features differ from those in the saved state");
  }
  // Check every running ring before changing any.
  for (uint32_t q = 0; q < queues_.size(); q++) {
    const QueueState& qs = queues_[q];
    if (qs.vring == nullptr) continue;
    const QueuePosition& want = s.queues[q];
    const std::string name = "queue " + std::to_string(q);
    if (!want.valid) return make_error(name + " runs, but it had not been started when the state was saved");
    if (want.used_idx != qs.queue->used_idx()) {
      return make_error(name + "'s used index is " + std::to_string(qs.queue->used_idx()) +
                        " in guest memory but " + std::to_string(want.used_idx) + " in the saved state");
    }
    // Requests the saved device had taken and not returned must be ones this worker will
    // resubmit (from the inflight buffer); any other would be lost.
    uint16_t taken = static_cast<uint16_t>(want.next_avail - want.used_idx);
    if (taken > qs.config.size || taken != qs.resubmit.size()) {
      return make_error("the saved state has " + std::to_string(taken) + " requests of " + name +
                        " taken and not returned, but this worker has " + std::to_string(qs.resubmit.size()) +
                        " to resubmit");
    }
  }
  expected_features_ = s.acked_features;
  expected_positions_.assign(queues_.size(), QueuePosition{});
  for (uint32_t q = 0; q < queues_.size(); q++) {
    QueueState& qs = queues_[q];
    if (qs.vring != nullptr) {
      qs.queue->set_last_avail_idx(s.queues[q].next_avail);
      positions_[q] = QueuePosition{};
    } else {
      expected_positions_[q] = s.queues[q];
      positions_[q] = s.queues[q];
    }
  }
  return {};
}

Result<std::vector<uint8_t>> BlkDevice::save_state() { return encode_state(state()); }

Result<void> BlkDevice::load_state(std::span<const uint8_t> bytes) {
  MOSS_TRY(SavedState s, decode_state(bytes));
  MOSS_CHECK(check_state_fits(s, disk_.info(), serial_, num_queues()));
  if (acked_ != 0 && acked_ != s.acked_features) {
    return make_error("the driver's features differ from those in the saved state");
  }
  expected_features_ = s.acked_features;
  expected_positions_ = s.queues;
  return {};
}

}  // namespace moss::blk
