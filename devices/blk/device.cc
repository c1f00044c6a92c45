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

BlkDevice::BlkDevice(const Disk& disk, Engine& engine, DeviceOptions options, event_base* loop)
    : disk_(disk),
      engine_(engine),
      serial_(options.serial.empty() ? disk.info().serial : options.serial),
      config_(config_space(disk.info(), options.num_queues)),
      rings_(options.num_queues, "virtio-blk"),
      queues_(options.num_queues),
      positions_(options.num_queues) {
  MOSS_ASSERT(options.num_queues >= 1 && options.num_queues <= 256);
  MOSS_ASSERT(serial_.size() <= kIdBytes);
  // A wake-up left from an earlier device finds nothing to poll: each drains before it goes.
  engine_event_ = Event::on_fd(loop, engine_.completion_fd(), EV_READ | EV_PERSIST, [this](int, short) { on_io_ready(); });
  engine_event_.add();
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
  return features_.set(acked);
}

Result<std::vector<uint8_t>> BlkDevice::get_config(uint32_t offset, uint32_t size) {
  return runtime::config_read(config_, offset, size, "virtio-blk");
}

Result<void> BlkDevice::set_config(uint32_t, std::span<const uint8_t>, uint32_t) {
  // The only writable field is `writeback`, which needs VIRTIO_BLK_F_CONFIG_WCE.
  return make_error("the virtio-blk config space is read-only");
}

DiskGeometry BlkDevice::geometry() const {
  return DiskGeometry{disk_.info().capacity_sectors, disk_.info().read_only,
                      (features_.acked() & fbit(feature::kDiscard)) != 0, (features_.acked() & fbit(feature::kWriteZeroes)) != 0};
}

// ---- Rings ----

Result<void> BlkDevice::on_queue_started(uint32_t index, const vhost_user::Vring& vring) {
  MOSS_ASSERT(index < queues_.size());
  QueueState& qs = queues_[index];
  MOSS_ASSERT(qs.in_flight == 0);
  qs = QueueState{};
  MOSS_TRY(virtio::Queue* queue, rings_.start(index, vring, features_.acked()));
  auto refuse = [&](Error e) -> Result<void> {
    rings_.discard(index);
    qs = QueueState{};
    return e;
  };
  const vhost_user::Backend& backend = rings_.backend();
  vhost_user::InflightArea area = backend.inflight();
  if (area.data != nullptr && (backend.acked_protocol_features() & bit(pf::kInflightShmfd))) {
    if (index >= area.num_queues) {
      return refuse(make_error("the inflight buffer covers " + std::to_string(area.num_queues) + " queues, not queue " +
                               std::to_string(index)));
    }
    uint64_t per_queue = vhost_user::Backend::inflight_queue_region_size(area.queue_size);
    MOSS_ASSERT(per_queue * area.num_queues <= area.size);  // The Backend checked the geometry.
    std::span<uint8_t> region(area.data + per_queue * index, per_queue);
    auto t = InflightTracker::attach(region, area.queue_size, rings_.config(index).size, queue->used_idx());
    if (!t.ok()) return refuse(std::move(t).take_error());
    if (!t->fresh()) {
      uint16_t next = t->next_avail(queue->used_idx());
      if (next != vring.base) {
        LOG_INFO("queue %u resumes at available index %u from the inflight buffer (%zu requests to resubmit), "
                 "not at %u", index, next, t->resubmit().size(), vring.base);
      }
      queue->set_last_avail_idx(next);
      qs.resubmit = t->resubmit();
    }
    qs.inflight = std::move(*t);
    qs.inflight_base = area.data;
  }

  if (index < expected_positions_.size() && expected_positions_[index].valid) {
    const QueuePosition& want = expected_positions_[index];
    if (want.next_avail != queue->last_avail_idx() || want.used_idx != queue->used_idx()) {
      return refuse(make_error("queue " + std::to_string(index) + " resumes at available index " +
                               std::to_string(queue->last_avail_idx()) + " and used index " +
                               std::to_string(queue->used_idx()) + " but the restored state says " +
                               std::to_string(want.next_avail) + " and " + std::to_string(want.used_idx)));
    }
    expected_positions_[index] = QueuePosition{};
  }

  qs.slots.resize(rings_.config(index).size);
  if (vring.enabled) process(index);
  return {};
}

uint16_t BlkDevice::on_queue_stopped(uint32_t index) {
  MOSS_ASSERT(index < queues_.size() && rings_.started(index));
  drain(index);
  const uint16_t used = rings_.queue(index).used_idx();
  uint16_t next = rings_.stop(index);
  positions_[index] = QueuePosition{true, next, used};
  queues_[index] = QueueState{};
  return next;
}

void BlkDevice::on_queue_enabled(uint32_t index, bool enabled) {
  // A disabled ring is left alone (no side effects); enabling it picks up what is waiting.
  if (enabled && rings_.started(index)) process(index);
}

void BlkDevice::on_memory_changing() {
  // Requests point into the old mapping, and so do the rings: finish the I/O now, and
  // rebuild each ring on the new table before it is touched again.
  for (uint32_t q = 0; q < queues_.size(); q++) {
    if (rings_.started(q)) drain(q);
  }
  rings_.memory_changing();
}

void BlkDevice::reset() {
  for (uint32_t q = 0; q < queues_.size(); q++) MOSS_ASSERT(!rings_.started(q));  // The Backend stopped them.
  features_.reset();
  std::fill(positions_.begin(), positions_.end(), QueuePosition{});
  expected_positions_.clear();
}

void BlkDevice::on_kick(uint32_t queue) {
  if (rings_.started(queue)) process(queue);
}

InflightTracker* BlkDevice::tracker(uint32_t q) {
  QueueState& qs = queues_[q];
  if (!qs.inflight) return nullptr;
  // A frontend that replaces the inflight buffer while the ring runs (SET_INFLIGHT_FD) has
  // unmapped the one we track: stop tracking rather than write into a stale pointer.
  if (rings_.backend().inflight().data != qs.inflight_base) {
    LOG_WARN("the frontend replaced the inflight buffer while queue %u runs; inflight tracking stops", q);
    qs.inflight.reset();
    return nullptr;
  }
  return &*qs.inflight;
}

void BlkDevice::process(uint32_t q) {
  QueueState& qs = queues_[q];
  // RingSet::ready: in memory changes, on_memory_changing drained first.
  if (!rings_.ready(q)) return;
  virtio::Queue& queue = rings_.queue(q);
  // Requests a previous backend left in flight go first, in the order it took them.
  std::vector<uint16_t> resubmit;
  resubmit.swap(qs.resubmit);
  for (uint16_t head : resubmit) {
    if (!rings_.broken(q)) start_request(q, head);
  }
  // At most one ring's worth per call, so one busy queue cannot starve the others or the
  // control socket; a self-kick brings us back after the loop has served them.
  uint32_t budget = rings_.config(q).size;
  bool more = false;
  for (;;) {
    queue.disable_notification();
    while (!rings_.broken(q) && budget > 0) {
      auto head = queue.pop_head();
      if (!head.ok()) {
        rings_.break_ring(q, head.error().message);
        break;
      }
      if (!*head) break;
      --budget;
      if (qs.slots[**head].busy) {
        rings_.break_ring(q, "the driver offered head " + std::to_string(**head) + " again while it is in flight");
        break;
      }
      if (InflightTracker* t = tracker(q)) t->mark(**head);
      start_request(q, **head);
    }
    if (rings_.broken(q)) break;
    if (budget == 0) {
      more = true;
      break;
    }
    if (!queue.enable_notification()) break;
  }
  engine_.submit();
  rings_.signal_used();
  if (more) rings_.kick_self(q);
}

void BlkDevice::start_request(uint32_t q, uint16_t head) {
  QueueState& qs = queues_[q];
  auto chain = virtio::walk_chain(rings_.backend().memory(), rings_.config(q), head);
  if (!chain.ok()) return rings_.break_ring(q, chain.error().message);
  Parsed p = parse_request(*chain, geometry());
  if (p.error && p.error->status_byte.empty()) return rings_.break_ring(q, p.error->message);

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
    LOG_DEBUG("queue %u head %u: %s", q, head, errno_message("disk I/O failed", -res).c_str());
    s.status = kIoErr;
  }
  if (--s.pending == 0) complete(q, head);
}

void BlkDevice::complete(uint32_t q, uint16_t head) {
  QueueState& qs = queues_[q];
  Slot& s = qs.slots[head];
  // On failure only the status byte counts as written (len may understate, never overstate).
  if (s.status != kOk) s.used_len = 1;
  s.status_byte[0] = s.status;
  count(s);
  InflightTracker* t = tracker(q);
  if (t != nullptr) t->before_push(head);
  // Memory changes drain first, so nothing completes on a ring that needs rebuilding.
  auto pushed = rings_.queue(q).push_used(head, s.used_len);
  s = Slot{};
  --qs.in_flight;
  if (!pushed.ok()) {
    // Our count of taken heads disagrees with used->idx: the guest wrote the used index,
    // which only the device may write.
    return rings_.break_ring(q, pushed.error().message);
  }
  if (t != nullptr) t->after_push(head, rings_.queue(q).used_idx());
  rings_.pushed(q);
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

void BlkDevice::on_io_ready() {
  engine_.poll([this](Engine::Tag tag, int res) { on_done(tag, res); });
  rings_.signal_used();
}

void BlkDevice::drain(uint32_t q) {
  while (queues_[q].in_flight > 0) engine_.wait([this](Engine::Tag tag, int res) { on_done(tag, res); });
  rings_.signal_used();
}

void BlkDevice::drain() {
  for (uint32_t q = 0; q < queues_.size(); q++) drain(q);
}

// ---- Counters and state ----

runtime::Stats BlkDevice::stats() const {
  const Counters& c = counters_;
  runtime::Stats s;
  s.requests = c.read_requests + c.write_requests + c.flush_requests + c.other_requests;
  s.errors = c.errors;
  s.bytes_in = c.bytes_written;
  s.bytes_out = c.bytes_read;
  s.in_flight = in_flight();
  s.counters = {{"readRequests", c.read_requests},
                {"writeRequests", c.write_requests},
                {"flushRequests", c.flush_requests},
                {"otherRequests", c.other_requests}};
  return s;
}

uint32_t BlkDevice::in_flight() const {
  uint32_t n = 0;
  for (const auto& q : queues_) n += q.in_flight;
  return n;
}

SavedState BlkDevice::state() const {
  MOSS_ASSERT(in_flight() == 0);
  SavedState s;
  s.acked_features = features_.saved();
  s.capacity_sectors = disk_.info().capacity_sectors;
  s.read_only = disk_.info().read_only;
  s.serial = serial_;
  s.queues = positions_;
  for (uint32_t q = 0; q < queues_.size(); q++) {
    if (!rings_.started(q)) continue;
    const virtio::Queue& queue = rings_.queue(q);
    s.queues[q] = QueuePosition{true, queue.last_avail_idx(), queue.used_idx()};
  }
  return s;
}

Result<std::vector<uint8_t>> BlkDevice::save_state() { return encode_state(state()); }

Result<void> BlkDevice::load_state(std::span<const uint8_t> bytes) {
  MOSS_TRY(SavedState s, decode_state(bytes));
  MOSS_TRY_VOID(check_state_fits(s, disk_.info(), serial_, num_queues()));
  MOSS_TRY_VOID(features_.expect(s.acked_features));
  expected_positions_ = s.queues;
  positions_ = s.queues;  // What a save reports until the rings start.
  return {};
}

}  // namespace moss::blk
