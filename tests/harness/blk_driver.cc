#include "tests/harness/blk_driver.h"

#include <algorithm>
#include <cstring>

namespace moss::harness {
namespace {

using Buf = virtio::DriverQueue::Buffer;

constexpr uint64_t kControlBytes = 4096;  // Per slot: header, status, indirect table.

// virtio_blk_req's header and a DISCARD / WRITE_ZEROES segment, as on the wire.
struct [[gnu::packed]] ReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
struct [[gnu::packed]] Segment {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};

template <typename T>
T field(std::span<const uint8_t> b, size_t off) {
  T v{};
  if (off + sizeof v <= b.size()) std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

}  // namespace

BlkConfig parse_blk_config(std::span<const uint8_t> b) {
  // Offsets of struct virtio_blk_config (virtio 1.2, 5.2.4).
  BlkConfig c;
  c.capacity_sectors = field<uint64_t>(b, 0);
  c.size_max = field<uint32_t>(b, 8);
  c.seg_max = field<uint32_t>(b, 12);
  c.blk_size = field<uint32_t>(b, 20);
  c.num_queues = field<uint16_t>(b, 34);
  c.max_discard_sectors = field<uint32_t>(b, 36);
  c.max_discard_seg = field<uint32_t>(b, 40);
  c.max_write_zeroes_sectors = field<uint32_t>(b, 48);
  c.max_write_zeroes_seg = field<uint32_t>(b, 52);
  c.write_zeroes_may_unmap = field<uint8_t>(b, 56) != 0;
  return c;
}

std::string status_name(uint8_t status) {
  switch (status) {
    case blk::kOk: return "OK";
    case blk::kIoErr: return "IOERR";
    case blk::kUnsupported: return "UNSUPP";
    case kNoStatus: return "no status";
    default: return "status " + std::to_string(status);
  }
}

Result<BlkDriver> BlkDriver::create(Guest& guest, const Options& options) {
  if (options.queue >= guest.num_queues() || options.depth == 0 || options.max_bytes == 0) {
    return make_error("a blk driver needs an existing queue, a depth and a buffer size");
  }
  BlkDriver d(guest, options, parse_blk_config(guest.config()));
  // Header and status take two descriptors; the rest of the slot's table holds data segments.
  d.max_segments_ = static_cast<uint32_t>((kControlBytes - kTableOffset) / sizeof(virtio::Descriptor)) - 2;
  if (guest.has_feature(feature::kBlkSegMax) && d.config_.seg_max > 0) {
    d.max_segments_ = std::min(d.max_segments_, d.config_.seg_max);
  }
  d.slots_.resize(options.depth);
  for (Slot& s : d.slots_) {
    MOSS_TRY(s.control_gpa, guest.ram().alloc(kControlBytes, 4096));
    MOSS_TRY(s.data_gpa, guest.ram().alloc(options.max_bytes, 4096));
  }
  d.slot_of_head_.assign(guest.options().queue_size, -1);
  return d;
}

std::chrono::steady_clock::time_point BlkDriver::deadline() const {
  return std::chrono::steady_clock::now() + guest_->options().timeout;
}

std::optional<uint32_t> BlkDriver::free_slot() const {
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].busy) return i;
  }
  return std::nullopt;
}

std::span<uint8_t> BlkDriver::buffer(uint32_t slot) {
  return guest_->ram().bytes(slots_.at(slot).data_gpa, options_.max_bytes);
}

Result<void> BlkDriver::submit(uint32_t slot_index, const BlkOp& op) {
  Slot& s = slots_.at(slot_index);
  MOSS_ASSERT(!s.busy);
  GuestRam& ram = guest_->ram();
  ReqHeader h{static_cast<uint32_t>(op.type), 0, op.sector};
  std::memcpy(ram.bytes(s.control_gpa, sizeof h).data(), &h, sizeof h);
  ram.bytes(s.control_gpa + kStatusOffset, 1)[0] = kNoStatus;

  std::vector<Buf> readable{{s.control_gpa, sizeof h}}, writable;
  auto add_data = [&](uint64_t gpa, uint64_t bytes, std::vector<Buf>& into) -> Result<void> {
    if (bytes > options_.max_bytes) {
      return make_error("a request of " + std::to_string(bytes) + " bytes does not fit the slot's " +
                        std::to_string(options_.max_bytes) + "-byte buffer");
    }
    uint64_t seg = bytes;
    if (guest_->has_feature(feature::kBlkSizeMax) && config_.size_max > 0) seg = std::min<uint64_t>(seg, config_.size_max);
    for (uint64_t off = 0; off < bytes; off += seg) {
      if (into.size() >= max_segments_ + 1) return make_error("a request needs more segments than the device takes");
      into.push_back({gpa + off, static_cast<uint32_t>(std::min(seg, bytes - off))});
    }
    return {};
  };
  switch (op.type) {
    case blk::Type::kIn:
    case blk::Type::kGetId:
      MOSS_TRY_VOID(add_data(s.data_gpa, op.bytes, writable));
      break;
    case blk::Type::kOut:
      MOSS_TRY_VOID(add_data(s.data_gpa, op.bytes, readable));
      break;
    case blk::Type::kDiscard:
    case blk::Type::kWriteZeroes: {
      std::vector<Segment> segs;
      for (const blk::Range& r : op.ranges) segs.push_back({r.sector, r.sectors, r.unmap ? 1u : 0u});
      uint64_t bytes = segs.size() * sizeof(Segment);
      if (bytes > options_.max_bytes) return make_error("too many discard or write-zeroes segments for the slot");
      std::memcpy(ram.bytes(s.data_gpa, bytes).data(), segs.data(), bytes);
      MOSS_TRY_VOID(add_data(s.data_gpa, bytes, readable));
      break;
    }
    case blk::Type::kFlush:
      break;
  }
  writable.push_back({s.control_gpa + kStatusOffset, 1});

  virtio::DriverQueue& q = guest_->queue(options_.queue);
  bool indirect = options_.descriptors == Descriptors::kIndirect ||
                  (options_.descriptors == Descriptors::kAuto && guest_->has_feature(feature::kIndirectDesc));
  uint16_t head;
  if (indirect) {
    MOSS_TRY(head, q.add_indirect_chain(readable, writable, s.control_gpa + kTableOffset));
  } else {
    MOSS_TRY(head, q.add_chain(readable, writable));
  }
  s.busy = true;
  s.head = head;
  slot_of_head_.at(head) = static_cast<int32_t>(slot_index);
  ++in_flight_;
  return {};
}

Result<void> BlkDriver::kick() { return guest_->kick_if_needed(options_.queue); }

Result<std::vector<Completion>> BlkDriver::reap(size_t at_least) {
  std::vector<Completion> out;
  virtio::DriverQueue& q = guest_->queue(options_.queue);
  auto until = deadline();
  for (;;) {
    for (;;) {
      MOSS_TRY(auto used, q.pop_used());
      if (!used) break;
      int32_t slot = slot_of_head_.at(used->first);
      if (slot < 0) return make_error("the device completed head " + std::to_string(used->first) + ", not a request of ours");
      slot_of_head_[used->first] = -1;
      Slot& s = slots_[static_cast<uint32_t>(slot)];
      s.busy = false;
      --in_flight_;
      uint8_t status = guest_->ram().bytes(s.control_gpa + kStatusOffset, 1)[0];
      out.push_back({static_cast<uint32_t>(slot), status, used->second});
    }
    if (out.size() >= at_least || in_flight_ == 0) return out;
    if (q.enable_interrupts()) continue;
    MOSS_TRY_VOID(guest_->wait_call(options_.queue, until));
  }
}

Result<uint8_t> BlkDriver::one(const BlkOp& op) {
  if (in_flight_ != 0) return make_error("a blocking request needs an idle driver");
  MOSS_TRY_VOID(submit(0, op));
  MOSS_TRY_VOID(kick());
  MOSS_TRY(auto done, reap(1));
  MOSS_ASSERT(done.size() == 1);
  return done[0].status;
}

Result<uint8_t> BlkDriver::read(uint64_t sector, std::span<uint8_t> out) {
  MOSS_TRY(uint8_t status, one({blk::Type::kIn, sector, static_cast<uint32_t>(out.size()), {}}));
  std::memcpy(out.data(), buffer(0).data(), out.size());
  return status;
}

Result<uint8_t> BlkDriver::write(uint64_t sector, std::span<const uint8_t> data) {
  if (data.size() > options_.max_bytes) return make_error("the write does not fit the slot's buffer");
  std::memcpy(buffer(0).data(), data.data(), data.size());
  return one({blk::Type::kOut, sector, static_cast<uint32_t>(data.size()), {}});
}

Result<uint8_t> BlkDriver::flush() { return one({blk::Type::kFlush, 0, 0, {}}); }

Result<uint8_t> BlkDriver::discard(std::span<const blk::Range> ranges) {
  return one({blk::Type::kDiscard, 0, 0, std::vector<blk::Range>(ranges.begin(), ranges.end())});
}

Result<uint8_t> BlkDriver::write_zeroes(std::span<const blk::Range> ranges) {
  return one({blk::Type::kWriteZeroes, 0, 0, std::vector<blk::Range>(ranges.begin(), ranges.end())});
}

Result<std::pair<uint8_t, std::string>> BlkDriver::get_id() {
  std::memset(buffer(0).data(), 0, blk::kIdBytes);
  MOSS_TRY(uint8_t status, one({blk::Type::kGetId, 0, static_cast<uint32_t>(blk::kIdBytes), {}}));
  const char* p = reinterpret_cast<const char*>(buffer(0).data());
  return std::pair<uint8_t, std::string>(status, std::string(p, strnlen(p, blk::kIdBytes)));
}

}  // namespace moss::harness
