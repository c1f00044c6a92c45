#include "tests/harness/malformed.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "devices/blk/request.h"

namespace moss::harness {
namespace {

using virtio::Descriptor;
using virtio::DriverQueue;
using virtio::kDescFIndirect;
using virtio::kDescFNext;
using virtio::kDescFWrite;

constexpr uint16_t kR = 0;
constexpr uint16_t kW = kDescFWrite;
constexpr uint16_t kN = kDescFNext;

struct [[gnu::packed]] Header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

Result<void> write_header(const GuestMemory& mem, const ChainLayout& l, blk::Type type, uint64_t sector = 0) {
  return mem.write_obj(l.header_gpa, Header{static_cast<uint32_t>(type), 0, sector});
}

// Writes descriptors 0..n-1 of the main table and publishes head 0.
Result<void> publish(DriverQueue& q, const std::vector<Descriptor>& descs) {
  for (size_t i = 0; i < descs.size(); ++i) MOSS_TRY_VOID(q.write_descriptor(static_cast<uint16_t>(i), descs[i]));
  q.publish_raw(0);
  return {};
}

uint16_t u16(size_t v) { return static_cast<uint16_t>(v); }

}  // namespace

const std::vector<MalformedCase>& malformed_cases() {
  static const std::vector<MalformedCase> all = {
      {"out-of-range-address", "a read whose data buffer lies outside guest memory", CaughtBy::kRing, false, false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.outside_gpa, l.data_bytes, kW | kN, 2}, {l.status_gpa, 1, kW, 0}});
       }},
      {"descriptor-loop", "a read whose chain loops back from the status to the data descriptor", CaughtBy::kRing, false,
       false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.data_gpa, l.data_bytes, kW | kN, 2}, {l.status_gpa, 1, kW | kN, 1}});
       }},
      {"status-device-readable", "a read whose status byte is device-readable (after writable data)", CaughtBy::kRing,
       false, true, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.data_gpa, l.data_bytes, kW | kN, 2}, {l.status_gpa, 1, kR, 0}});
       }},
      {"data-in-device-readable", "a read (IN) whose data buffer is device-readable", CaughtBy::kRequest, false, false,
       true,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.data_gpa, l.data_bytes, kR | kN, 2}, {l.status_gpa, 1, kW, 0}});
       }},
      {"oversized-length", "a read whose data descriptor runs past the end of guest memory", CaughtBy::kRing, false,
       false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         auto len = static_cast<uint32_t>(l.region_end - l.data_gpa + l.data_bytes);
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.data_gpa, len, kW | kN, 2}, {l.status_gpa, 1, kW, 0}});
       }},
      {"read-past-end", "a read of the sector just past the end of the disk", CaughtBy::kRequest, false, false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn, l.capacity_sectors));
         return publish(q, {{l.header_gpa, 16, kR | kN, 1}, {l.data_gpa, l.data_bytes, kW | kN, 2}, {l.status_gpa, 1, kW, 0}});
       }},
      {"short-header", "a request whose header is 8 bytes instead of 16", CaughtBy::kRequest, false, false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         return publish(q, {{l.header_gpa, 8, kR | kN, 1}, {l.status_gpa, 1, kW, 0}});
       }},
      {"indirect-in-indirect", "an indirect table whose entry points at another indirect table", CaughtBy::kRing, true,
       false, false,
       [](DriverQueue& q, const GuestMemory& m, const ChainLayout& l) -> Result<void> {
         MOSS_TRY_VOID(write_header(m, l, blk::Type::kIn));
         uint64_t inner = l.table_gpa + 64;
         MOSS_TRY_VOID(q.write_descriptor_at(l.table_gpa, {inner, 48, kDescFIndirect, 0}));
         MOSS_TRY_VOID(q.write_descriptor_at(inner, {l.header_gpa, 16, kR | kN, 1}));
         MOSS_TRY_VOID(q.write_descriptor_at(inner + 16, {l.data_gpa, l.data_bytes, kW | kN, 2}));
         MOSS_TRY_VOID(q.write_descriptor_at(inner + 32, {l.status_gpa, 1, kW, 0}));
         return publish(q, {{l.table_gpa, 16, kDescFIndirect, 0}});
       }},
      {"avail-idx-jump", "avail->idx moves more than the queue size past the device's position", CaughtBy::kRing, false,
       false, false,
       [](DriverQueue& q, const GuestMemory&, const ChainLayout&) -> Result<void> {
         q.set_avail_idx_raw(u16(q.avail_idx() + q.config().size + 1));
         return {};
       }},
      {"head-out-of-range", "an available head past the end of the descriptor table", CaughtBy::kRing, false, false,
       false,
       [](DriverQueue& q, const GuestMemory&, const ChainLayout&) -> Result<void> {
         q.publish_raw(q.config().size);
         return {};
       }},
  };
  return all;
}

Result<void> fill_sentinels(const GuestMemory& mem, const ChainLayout& l) {
  MOSS_TRY(auto data, mem.slice(l.data_gpa, l.data_bytes));
  std::memset(data.data(), kDataSentinel, data.size());
  MOSS_TRY(auto status, mem.slice(l.status_gpa, 1));
  status[0] = kStatusSentinel;
  return {};
}

uint16_t used_idx(const GuestMemory& mem, const virtio::QueueConfig& c) {
  auto v = mem.read_obj<uint16_t>(c.used_gpa + virtio::kRingIdxOffset);
  MOSS_ASSERT(v.ok());
  // Pairs with the device's release before its used->idx store: the element and the status
  // it wrote are visible once the new index is.
  std::atomic_thread_fence(std::memory_order_acquire);
  return *v;
}

virtio::UsedElem used_elem(const GuestMemory& mem, const virtio::QueueConfig& c, uint16_t idx) {
  auto v = mem.read_obj<virtio::UsedElem>(c.used_gpa + virtio::used_entry_offset(idx & (c.size - 1)));
  MOSS_ASSERT(v.ok());
  return *v;
}

}  // namespace moss::harness
