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
using virtio::put_le;
namespace pf = vhost_user::protocol_feature;

constexpr uint64_t fbit(int n) { return uint64_t{1} << n; }

Engine::Tag make_tag(uint32_t q, uint16_t head) { return (Engine::Tag{q} << 16) | head; }

}  // namespace

std::vector<uint8_t> config_space(const DiskInfo& disk, uint32_t num_queues) {
  std::vector<uint8_t> c(kConfigSize, 0);
  const uint32_t per_phys = disk.physical_block_size / kSectorSize;  // 1..128
  put_le<uint64_t>(c, 0, disk.capacity_sectors);
  put_le<uint32_t>(c, 8, kMaxSegmentBytes);
  put_le<uint32_t>(c, 12, kMaxSegments);
  // 16: geometry, not offered (VIRTIO_BLK_F_GEOMETRY).
  put_le<uint32_t>(c, 20, static_cast<uint32_t>(kSectorSize));  // blk_size: logical block.
  c[24] = static_cast<uint8_t>(std::countr_zero(per_phys));   // physical_block_exp
  c[25] = 0;                                                  // alignment_offset
  put_le<uint16_t>(c, 26, static_cast<uint16_t>(per_phys));      // min_io_size, in logical blocks
  put_le<uint32_t>(c, 28, disk.opt_io_size / static_cast<uint32_t>(kSectorSize));  // opt_io_size
  // 32: writeback, meaningful only with VIRTIO_BLK_F_CONFIG_WCE (not offered: we always cache
  // and honour flushes).
  put_le<uint16_t>(c, 34, static_cast<uint16_t>(num_queues));
  put_le<uint32_t>(c, 36, kMaxDiscardSectors);
  put_le<uint32_t>(c, 40, kMaxDiscardSegments);
  put_le<uint32_t>(c, 44, per_phys);  // discard_sector_alignment: punch whole blocks.
  put_le<uint32_t>(c, 48, kMaxDiscardSectors);
  put_le<uint32_t>(c, 52, kMaxDiscardSegments);
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
  if (s.rings.size() != num_queues) return differs("number of queues");
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

namespace {

runtime::VirtioSpec spec_of(const DiskInfo& disk, const DeviceOptions& options) {
  using namespace feature;
  uint64_t f = fbit(kSizeMax) | fbit(kSegMax) | fbit(kBlkSize) | fbit(kFlush) | fbit(kTopology) | fbit(kMq) |
               fbit(kDiscard) | fbit(kWriteZeroes) | fbit(kIndirectDesc) | fbit(kEventIdx) | fbit(kVersion1);
  // DISCARD and WRITE_ZEROES stay offered on a read-only disk (as QEMU does): a driver that
  // sends them anyway gets IOERR, as for any write (5.2.6.2). A legacy driver (no VERSION_1) is
  // served too: on x86 its rings and requests are the same bytes, and the parser takes any
  // descriptor layout.
  if (disk.read_only) f |= fbit(kRo);
  return runtime::VirtioSpec{"virtio-blk", f, bit(pf::kInflightShmfd), options.num_queues, kMaxQueueSize, {},
                             config_space(disk, options.num_queues), SavedState::kMaxBytes};
}

}  // namespace

BlkDevice::BlkDevice(const Disk& disk, Engine& engine, DeviceOptions options, event_base* loop)
    : VirtioDevice(spec_of(disk.info(), options)),
      disk_(disk),
      engine_(engine),
      serial_(options.serial.empty() ? disk.info().serial : options.serial),
      queues_(options.num_queues) {
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

DiskGeometry BlkDevice::geometry() const {
  return DiskGeometry{disk_.info().capacity_sectors, disk_.info().read_only,
                      (acked_features() & fbit(feature::kDiscard)) != 0, (acked_features() & fbit(feature::kWriteZeroes)) != 0};
}

// ---- Rings ----

Result<void> BlkDevice::ring_started(uint32_t index, virtio::Queue& queue) {
  QueueState& qs = queues_[index];
  MOSS_ASSERT(qs.in_flight == 0);
  qs = QueueState{};
  qs.slots.resize(rings().config(index).size);
  const vhost_user::Backend& backend = rings().backend();
  vhost_user::InflightArea area = backend.inflight();
  if (area.data == nullptr || !(backend.acked_protocol_features() & bit(pf::kInflightShmfd))) return {};
  if (index >= area.num_queues) {
    return make_error("the inflight buffer covers " + std::to_string(area.num_queues) + " queues, not queue " +
                      std::to_string(index));
  }
  uint64_t per_queue = vhost_user::Backend::inflight_queue_region_size(area.queue_size);
  MOSS_ASSERT(per_queue * area.num_queues <= area.size);  // The Backend checked the geometry.
  std::span<uint8_t> region(area.data + per_queue * index, per_queue);
  MOSS_TRY(InflightTracker t, InflightTracker::attach(region, area.queue_size, rings().config(index).size, queue.used_idx()));
  if (!t.fresh()) {
    uint16_t next = t.next_avail(queue.used_idx());
    const uint16_t base = rings().vring(index).base;
    if (next != base) {
      LOG_INFO("queue %u resumes at available index %u from the inflight buffer (%zu requests to resubmit), "
               "not at %u", index, next, t.resubmit().size(), base);
    }
    queue.set_last_avail_idx(next);
    qs.resubmit = t.resubmit();
  }
  qs.inflight = std::move(t);
  qs.inflight_base = area.data;
  return {};
}

void BlkDevice::ring_stopping(uint32_t index) {
  drain(index);
  queues_[index] = QueueState{};
}

void BlkDevice::memory_changing() {
  // Requests point into the old mapping, and so do the rings: finish the I/O now (the base
  // rebuilds each ring on the new table before it is touched again).
  for (uint32_t q = 0; q < queues_.size(); q++) {
    if (rings().started(q)) drain(q);
  }
}

InflightTracker* BlkDevice::tracker(uint32_t q) {
  QueueState& qs = queues_[q];
  if (!qs.inflight) return nullptr;
  // A frontend that replaces the inflight buffer while the ring runs (SET_INFLIGHT_FD) has
  // unmapped the one we track: stop tracking rather than write into a stale pointer.
  if (rings().backend().inflight().data != qs.inflight_base) {
    LOG_WARN("the frontend replaced the inflight buffer while queue %u runs; inflight tracking stops", q);
    qs.inflight.reset();
    return nullptr;
  }
  return &*qs.inflight;
}

void BlkDevice::process(uint32_t q) {
  QueueState& qs = queues_[q];
  // RingSet::ready: in memory changes, memory_changing drained first.
  if (!rings().ready(q)) return;
  // Requests a previous backend left in flight go first, in the order it took them.
  std::vector<uint16_t> resubmit;
  resubmit.swap(qs.resubmit);
  for (uint16_t head : resubmit) {
    if (!rings().broken(q)) start_request(q, head);
  }
  rings().take_available(q, [&](uint16_t head) {
    if (qs.slots[head].busy) {
      return rings().break_ring(q, "the driver offered head " + std::to_string(head) + " again while it is in flight");
    }
    if (InflightTracker* t = tracker(q)) t->mark(head);
    start_request(q, head);
  });
  engine_.submit();
  rings().signal_used();
}

void BlkDevice::start_request(uint32_t q, uint16_t head) {
  QueueState& qs = queues_[q];
  auto chain = virtio::walk_chain(rings().backend().memory(), rings().config(q), head);
  if (!chain.ok()) return rings().break_ring(q, chain.error().message);
  Parsed p = parse_request(*chain, geometry());
  if (p.error && p.error->status_byte.empty()) return rings().break_ring(q, p.error->message);

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
  auto pushed = rings().queue(q).push_used(head, s.used_len);
  s = Slot{};
  --qs.in_flight;
  if (!pushed.ok()) {
    // Our count of taken heads disagrees with used->idx: the guest wrote the used index,
    // which only the device may write.
    return rings().break_ring(q, pushed.error().message);
  }
  if (t != nullptr) t->after_push(head, rings().queue(q).used_idx());
  rings().pushed(q);
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
  rings().signal_used();
}

void BlkDevice::drain(uint32_t q) {
  while (queues_[q].in_flight > 0) engine_.wait([this](Engine::Tag tag, int res) { on_done(tag, res); });
  rings().signal_used();
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

Result<std::vector<uint8_t>> BlkDevice::write_state(const virtio::CommonState& common) const {
  MOSS_ASSERT(in_flight() == 0);  // Every ring stopped, so drained.
  SavedState s;
  static_cast<virtio::CommonState&>(s) = common;
  s.capacity_sectors = disk_.info().capacity_sectors;
  s.read_only = disk_.info().read_only;
  s.serial = serial_;
  return encode_state(s);
}

Result<virtio::CommonState> BlkDevice::read_state(std::span<const uint8_t> bytes) const {
  MOSS_TRY(SavedState s, decode_state(bytes));
  MOSS_TRY_VOID(check_state_fits(s, disk_.info(), serial_, num_queues()));
  return static_cast<virtio::CommonState&&>(std::move(s));
}

}  // namespace moss::blk
