#include "devices/virtio/queue.h"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "devices/virtio/ring_access.h"

namespace moss::virtio {
namespace {

__attribute__((format(printf, 1, 2))) std::string fmt(const char* format, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  return buf;
}

bool valid_queue_size(uint32_t size) {
  return size != 0 && size <= kMaxQueueSize && std::has_single_bit(size);
}

// Copies one descriptor out of a guest-shared table. The compiler barrier stops the compiler
// from dropping the local copy and re-loading fields from guest memory later, which would let
// the guest change a field between our check and our use (a double fetch).
Descriptor load_descriptor(std::span<const uint8_t> table, uint32_t index) {
  MOSS_ASSERT(index < table.size() / sizeof(Descriptor));
  Descriptor d;
  std::memcpy(&d, table.data() + uint64_t{index} * sizeof(Descriptor), sizeof d);
  asm volatile("" ::: "memory");
  return d;
}

// State of one walk, shared by the direct part and the indirect table.
struct Walk {
  const GuestMemory& mem;
  DescriptorChain& chain;
  bool seen_writable = false;
  uint64_t total = 0;  // Bytes so far; at most kMaxChainBytes, so sums below cannot wrap.
};

Error chain_error(const Walk& w, const std::string& what) {
  return make_error(fmt("virtqueue chain at head %u: ", w.chain.head) + what);
}

// Which descriptor a check is about; turned into text only when it fails, so the walk does no
// formatting on the success path.
struct Where {
  bool indirect;
  uint32_t index;
  std::string name() const { return fmt("%sdescriptor %u", indirect ? "indirect " : "", index); }
};

// Appends the host spans for guest range [gpa, gpa+len). The range may cross from one region
// into an adjacent one (hosts map guest RAM in several pieces; QEMU and libvhost-user accept
// such buffers too); it may not touch a hole. GuestMemory::slice does the actual bounds check
// of every piece.
Result<void> map_buffer(Walk& w, Where at_desc, uint64_t gpa, uint32_t len, bool writable) {
  uint64_t end;
  if (__builtin_add_overflow(gpa, uint64_t{len}, &end)) {
    return chain_error(w, fmt("%s 0x%" PRIx64 "+0x%x wraps around the address space",
                              at_desc.name().c_str(), gpa, len));
  }
  uint64_t at = gpa;
  while (at < end) {
    const GuestRegion* region = nullptr;
    for (const auto& r : w.mem.regions()) {
      if (at >= r.gpa && at - r.gpa < r.size) {
        region = &r;
        break;
      }
    }
    if (region == nullptr) {
      return chain_error(w, fmt("%s 0x%" PRIx64 "+0x%x is not wholly inside guest memory "
                                "(0x%" PRIx64 " is not RAM)", at_desc.name().c_str(), gpa, len, at));
    }
    uint64_t piece = std::min(end - at, region->size - (at - region->gpa));
    MOSS_TRY(auto span, w.mem.slice(at, piece));
    if (writable) {
      w.chain.writable.push_back(span);
    } else {
      w.chain.readable.emplace_back(span.data(), span.size());
    }
    at += piece;
  }
  return {};
}

// One buffer descriptor (not an indirect one): direction rule, limits, then the mapping.
Result<void> add_buffer(Walk& w, Where at_desc, const Descriptor& d) {
  bool writable = (d.flags & kDescFWrite) != 0;
  if (!writable && w.seen_writable) {
    return chain_error(w, fmt("%s is device-readable but follows a device-writable one "
                              "(the driver must put readable buffers first)", at_desc.name().c_str()));
  }
  w.seen_writable = w.seen_writable || writable;
  ++w.chain.descriptors;
  w.total += d.len;
  if (w.total > kMaxChainBytes) {
    return chain_error(w, fmt("%s takes the chain past %" PRIu64 " bytes", at_desc.name().c_str(),
                              kMaxChainBytes));
  }
  if (d.len == 0) return {};  // No bytes: nothing to map, the address is never used.
  (writable ? w.chain.writable_bytes : w.chain.readable_bytes) += d.len;
  return map_buffer(w, at_desc, d.addr, d.len, writable);
}

// The table an INDIRECT descriptor points at (2.7.5.3): its own index space, no nesting.
Result<void> walk_indirect(Walk& w, const Descriptor& ind, uint16_t at_index) {
  if (ind.flags & kDescFNext) {
    return chain_error(w, fmt("descriptor %u sets both INDIRECT and NEXT", at_index));
  }
  if (ind.len == 0 || ind.len % sizeof(Descriptor) != 0) {
    return chain_error(w, fmt("indirect table at descriptor %u is %u bytes, not a non-zero "
                              "multiple of 16", at_index, ind.len));
  }
  uint32_t entries = ind.len / sizeof(Descriptor);
  if (entries > kMaxIndirectDescriptors) {
    return chain_error(w, fmt("indirect table at descriptor %u has %u entries (at most %u)",
                              at_index, entries, kMaxIndirectDescriptors));
  }
  // One region, like QEMU: tables come from one kmalloc, and a contiguous view keeps this
  // simple.
  auto table = w.mem.slice(ind.addr, ind.len);
  if (!table.ok()) {
    return chain_error(w, fmt("indirect table at descriptor %u: ", at_index) + table.error().message);
  }
  uint32_t index = 0;
  for (uint32_t walked = 0;; ++walked) {
    if (walked == entries) {
      return chain_error(w, fmt("indirect table at descriptor %u has a loop (more than %u "
                                "descriptors walked)", at_index, entries));
    }
    Descriptor d = load_descriptor(*table, index);
    Where here{true, index};
    if (d.flags & kDescFIndirect) {
      return chain_error(w, here.name() + " is itself INDIRECT (nested tables are not allowed)");
    }
    MOSS_TRY_VOID(add_buffer(w, here, d));
    if (!(d.flags & kDescFNext)) return {};
    if (d.next >= entries) {
      return chain_error(w, fmt("%s links to %u, past the end of its %u-entry table",
                                here.name().c_str(), d.next, entries));
    }
    index = d.next;
  }
}

}  // namespace

Result<void> validate_queue_config(const GuestMemory& mem, const QueueConfig& c) {
  if (!valid_queue_size(c.size)) {
    return make_error(fmt("virtqueue size %u is not a power of two from 1 to %u", c.size, kMaxQueueSize));
  }
  struct Part {
    const char* name;
    uint64_t gpa, bytes, align;
  };
  const Part parts[] = {{"descriptor table", c.desc_gpa, desc_table_bytes(c.size), 16},
                        {"available ring", c.avail_gpa, avail_ring_bytes(c.size), 2},
                        {"used ring", c.used_gpa, used_ring_bytes(c.size), 4}};
  for (const Part& p : parts) {
    if (p.gpa % p.align != 0) {
      return make_error(fmt("the virtqueue %s at 0x%" PRIx64 " is not %" PRIu64 "-byte aligned",
                            p.name, p.gpa, p.align));
    }
    auto s = mem.slice(p.gpa, p.bytes);
    if (!s.ok()) return make_error(std::string("the virtqueue ") + p.name + ": " + s.error().message);
    // Ring fields are accessed atomically, so the host mapping must keep the guest alignment.
    // mmap is page-aligned, so only an odd region table (a peer's mmap_offset) gets here.
    if (reinterpret_cast<uintptr_t>(s->data()) % p.align != 0) {
      return make_error(fmt("the virtqueue %s at 0x%" PRIx64 " is misaligned in the host mapping "
                            "(a memory region's host offset is odd)", p.name, p.gpa));
    }
  }
  return {};
}

Result<DescriptorChain> walk_chain(const GuestMemory& mem, const QueueConfig& config, uint16_t head) {
  if (!valid_queue_size(config.size)) {
    return make_error(fmt("virtqueue size %u is not a power of two from 1 to %u", config.size, kMaxQueueSize));
  }
  if (head >= config.size) {
    return make_error(fmt("virtqueue head %u is outside the %u-entry descriptor table", head, config.size));
  }
  MOSS_TRY(auto table, mem.slice(config.desc_gpa, desc_table_bytes(config.size)));
  DescriptorChain chain;
  chain.head = head;
  Walk w{mem, chain};
  uint16_t index = head;
  // A valid chain visits each descriptor at most once, so more than `size` steps is a loop.
  for (uint32_t walked = 0;; ++walked) {
    if (walked == config.size) {
      return chain_error(w, fmt("more than %u descriptors (a loop?)", config.size));
    }
    Descriptor d = load_descriptor(table, index);
    if (d.flags & kDescFIndirect) {
      if (!config.indirect) {
        return chain_error(w, fmt("descriptor %u is INDIRECT but VIRTIO_F_INDIRECT_DESC was not "
                                  "negotiated", index));
      }
      // The indirect descriptor ends the chain (NEXT with INDIRECT is refused inside).
      MOSS_TRY_VOID(walk_indirect(w, d, index));
      break;
    }
    MOSS_TRY_VOID(add_buffer(w, Where{false, index}, d));
    if (!(d.flags & kDescFNext)) break;
    if (d.next >= config.size) {
      return chain_error(w, fmt("descriptor %u links to %u, outside the %u-entry table", index,
                                d.next, config.size));
    }
    index = d.next;
  }
  return chain;
}

// ---- ChainReader / ChainWriter ----

Error detail::short_chain_error(const char* what, uint64_t want, uint64_t have) {
  return make_error(fmt("the request needs to %s %" PRIu64 " bytes but the driver's buffers have "
                        "%" PRIu64 " left", what, want, have));
}

Result<void> ChainReader::read(std::span<uint8_t> out) {
  if (out.size() > cur_.remaining()) return detail::short_chain_error("read", out.size(), remaining());
  size_t at = 0;
  cur_.advance(out.size(), [&](std::span<const uint8_t> s) {
    std::memcpy(out.data() + at, s.data(), s.size());
    at += s.size();
  });
  return {};
}

Result<void> ChainReader::skip(uint64_t n) {
  if (n > cur_.remaining()) return detail::short_chain_error("skip", n, remaining());
  cur_.advance(n, [](std::span<const uint8_t>) {});
  return {};
}

Result<std::vector<std::span<const uint8_t>>> ChainReader::take(uint64_t n) {
  if (n > cur_.remaining()) return detail::short_chain_error("read", n, remaining());
  std::vector<std::span<const uint8_t>> out;
  cur_.advance(n, [&](std::span<const uint8_t> s) { out.push_back(s); });
  return out;
}

Result<void> ChainWriter::write(std::span<const uint8_t> bytes) {
  if (bytes.size() > cur_.remaining()) return detail::short_chain_error("write", bytes.size(), remaining());
  size_t at = 0;
  cur_.advance(bytes.size(), [&](std::span<uint8_t> s) {
    std::memcpy(s.data(), bytes.data() + at, s.size());
    at += s.size();
  });
  return {};
}

Result<std::vector<std::span<uint8_t>>> ChainWriter::take(uint64_t n) {
  if (n > cur_.remaining()) return detail::short_chain_error("write", n, remaining());
  std::vector<std::span<uint8_t>> out;
  cur_.advance(n, [&](std::span<uint8_t> s) { out.push_back(s); });
  return out;
}

// ---- Queue ----

Queue::Queue(const GuestMemory& mem, const QueueConfig& config, std::span<uint8_t> avail,
             std::span<uint8_t> used)
    : mem_(&mem), config_(config), avail_(avail), used_(used) {
  used_idx_ = ring::load16(used_, kRingIdxOffset);
}

Result<Queue> Queue::create(const GuestMemory& mem, const QueueConfig& config) {
  MOSS_TRY_VOID(validate_queue_config(mem, config));
  MOSS_TRY(auto avail, mem.slice(config.avail_gpa, avail_ring_bytes(config.size)));
  MOSS_TRY(auto used, mem.slice(config.used_gpa, used_ring_bytes(config.size)));
  return Queue(mem, config, avail, used);
}

void Queue::set_last_avail_idx(uint16_t idx) {
  last_avail_ = idx;
  signalled_used_valid_ = false;
}

Result<std::optional<uint16_t>> Queue::pop_head() {
  uint16_t avail_idx = ring::load16(avail_, kRingIdxOffset);
  // Acquire: pairs with the release barrier the driver puts before its avail->idx store
  // (2.7.13.3.1), so the ring entry and descriptors we read next are at least as new as idx.
  std::atomic_thread_fence(std::memory_order_acquire);
  uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
  if (pending == 0) return std::optional<uint16_t>();
  if (pending > config_.size) {
    return make_error(fmt("the driver moved the available index from %u to %u, more than the "
                          "queue size %u ahead", last_avail_, avail_idx, config_.size));
  }
  uint16_t slot = last_avail_ & (config_.size - 1);
  uint16_t head = ring::load16(avail_, avail_entry_offset(slot));
  if (head >= config_.size) {
    return make_error(fmt("the driver offered head %u in available slot %u, outside the %u-entry "
                          "descriptor table", head, slot, config_.size));
  }
  ++last_avail_;
  return std::optional<uint16_t>(head);
}

Result<std::optional<DescriptorChain>> Queue::pop() {
  MOSS_TRY(auto head, pop_head());
  if (!head) return std::optional<DescriptorChain>();
  MOSS_TRY(auto chain, walk_chain(*mem_, config_, *head));
  return std::optional<DescriptorChain>(std::move(chain));
}

Result<void> Queue::push_used(uint16_t head, uint32_t written) {
  MOSS_ASSERT(head < config_.size);  // Heads come from pop_head(), which checked them.
  uint16_t in_flight = static_cast<uint16_t>(last_avail_ - used_idx_);
  if (in_flight == 0 || in_flight > config_.size) {
    return make_error(fmt("virtqueue: returning head %u but %u chains are in flight (used index "
                          "%u, available index %u)", head, in_flight, used_idx_, last_avail_));
  }
  UsedElem elem{head, written};
  uint64_t off = used_entry_offset(used_idx_ & (config_.size - 1));
  MOSS_ASSERT(off + sizeof elem <= used_.size());
  std::memcpy(used_.data() + off, &elem, sizeof elem);
  // Release: the used element and everything the device wrote into the chain's buffers must
  // be visible before the idx that hands them to the driver (2.7.8.2).
  std::atomic_thread_fence(std::memory_order_release);
  ++used_idx_;
  ring::store16(used_, kRingIdxOffset, used_idx_);
  return {};
}

bool Queue::needs_notification() {
  // Full fence: our used->idx store must be visible before we read used_event / flags. The
  // driver does the mirror image (writes used_event, full barrier, re-reads used->idx); with
  // anything weaker both sides can read stale values and an interrupt is lost for good.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!config_.event_idx) {
    return (ring::load16(avail_, kRingFlagsOffset) & kAvailFNoInterrupt) == 0;
  }
  uint16_t event = ring::load16(avail_, used_event_offset(config_.size));
  uint16_t old = signalled_used_;
  bool had_history = signalled_used_valid_;
  signalled_used_ = used_idx_;
  signalled_used_valid_ = true;
  // Without history (first call, or after a restore) we cannot tell whether used_event was
  // passed, and a spurious interrupt is harmless while a lost one hangs the driver.
  if (!had_history) return true;
  return need_event(event, used_idx_, old);
}

void Queue::disable_notification() {
  // With EVENT_IDX flags must stay 0 (2.7.10); an avail_event we stop advancing lies behind
  // the driver's index, so it already suppresses kicks.
  if (!config_.event_idx) ring::store16(used_, kRingFlagsOffset, kUsedFNoNotify);
}

bool Queue::enable_notification() {
  if (config_.event_idx) {
    ring::store16(used_, avail_event_offset(config_.size), last_avail_);
  } else {
    ring::store16(used_, kRingFlagsOffset, 0);
  }
  // Full fence: publish the request before re-reading avail->idx. The driver publishes idx,
  // fences, then reads avail_event/flags; a buffer added in between is seen by one of us.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return ring::load16(avail_, kRingIdxOffset) != last_avail_;
}

void Queue::set_avail_event(uint16_t idx) {
  if (config_.event_idx) ring::store16(used_, avail_event_offset(config_.size), idx);
}

}  // namespace moss::virtio
