#include "tests/harness/vsock_driver.h"

#include <algorithm>
#include <cstring>

namespace moss::harness {
namespace {

using vsock::kHeaderSize;
using vsock::Op;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kRx = vsock::kRxQueue;
constexpr uint32_t kTx = vsock::kTxQueue;
constexpr uint32_t kEvent = vsock::kEventQueue;

uint16_t op_of(Op op) { return static_cast<uint16_t>(op); }

}  // namespace

GuestOptions VsockDriver::guest_options(uint16_t queue_size, uint64_t memory_bytes) {
  GuestOptions g;
  g.memory_bytes = memory_bytes;
  g.num_queues = vsock::kNumQueues;
  g.queue_size = queue_size;
  g.inflight = false;
  g.device_features = 0;  // No VIRTIO_VSOCK_F_SEQPACKET: stream sockets only.
  g.config_bytes = 8;
  return g;
}

Result<std::unique_ptr<VsockDriver>> VsockDriver::create(Guest& guest, VsockDriverOptions options) {
  std::unique_ptr<VsockDriver> d(new VsockDriver(guest, options));
  MOSS_TRY_VOID(d->init());
  return d;
}

Result<void> VsockDriver::init() {
  if (guest_.num_queues() < vsock::kNumQueues) return make_error("a vsock guest needs three queues");
  GuestRam& ram = guest_.ram();
  rx_slots_.resize(o_.rx_buffers);
  for (size_t i = 0; i < rx_slots_.size(); i++) {
    MOSS_TRY(rx_slots_[i].header_gpa, ram.alloc(kHeaderSize, 64));
    MOSS_TRY(rx_slots_[i].payload_gpa, ram.alloc(o_.rx_buffer_bytes, 64));
    rx_free_.push_back(i);
  }
  tx_slots_.resize(o_.tx_slots);
  for (size_t i = 0; i < tx_slots_.size(); i++) {
    MOSS_TRY(tx_slots_[i].header_gpa, ram.alloc(kHeaderSize, 64));
    MOSS_TRY(tx_slots_[i].payload_gpa, ram.alloc(o_.tx_buffer_bytes, 64));
    tx_free_.push_back(i);
  }
  MOSS_TRY_VOID(post_rx(o_.rx_buffers));
  for (uint32_t i = 0; i < o_.event_buffers; i++) {
    MOSS_TRY(uint64_t gpa, ram.alloc(vsock::kEventSize, 8));
    MOSS_TRY_VOID(post_event(gpa));
  }
  MOSS_TRY_VOID(guest_.kick(kEvent));
  if (o_.await_transport_reset) MOSS_TRY_VOID(wait_for([&] { return transport_resets_ > 0; }, "TRANSPORT_RESET"));
  return {};
}

uint64_t VsockDriver::config_guest_cid() const {
  const auto& c = guest_.config();
  uint64_t cid = 0;
  if (c.size() >= 8) std::memcpy(&cid, c.data(), 8);
  return cid;
}

Result<void> VsockDriver::post_rx_slot(size_t slot) {
  const RxSlot& s = rx_slots_[slot];
  virtio::DriverQueue::Buffer bufs[2] = {{s.header_gpa, kHeaderSize}, {s.payload_gpa, o_.rx_buffer_bytes}};
  MOSS_TRY(uint16_t head, guest_.queue(kRx).add_chain({}, bufs));
  rx_posted_heads_[head] = slot;
  ++rx_posted_;
  return {};
}

Result<void> VsockDriver::post_rx(uint32_t n) {
  for (uint32_t i = 0; i < n && !rx_free_.empty(); i++) {
    size_t slot = rx_free_.back();
    rx_free_.pop_back();
    MOSS_TRY_VOID(post_rx_slot(slot));
  }
  return guest_.kick_if_needed(kRx);
}

Result<void> VsockDriver::post_event(uint64_t gpa) {
  MOSS_TRY_VOID(guest_.memory().write_obj<uint32_t>(gpa, 0xffffffff));
  virtio::DriverQueue::Buffer b{gpa, vsock::kEventSize};
  MOSS_TRY(uint16_t head, guest_.queue(kEvent).add_chain({}, std::span(&b, 1)));
  event_heads_[head] = gpa;
  return {};
}

PacketHeader VsockDriver::header(ConnKey key, Op op, uint32_t len, uint32_t flags) {
  PacketHeader h;
  h.src_cid = o_.guest_cid;
  h.dst_cid = vsock::kHostCid;
  h.src_port = key.guest_port;
  h.dst_port = key.host_port;
  h.len = len;
  h.type = vsock::kTypeStream;
  h.op = op_of(op);
  h.flags = flags;
  h.buf_alloc = o_.buf_alloc;
  if (auto it = streams_.find(key); it != streams_.end()) {
    h.buf_alloc = it->second.buf_alloc;
    h.fwd_cnt = it->second.fwd_cnt;
    it->second.told_fwd_cnt = it->second.fwd_cnt;
  }
  return h;
}

void VsockDriver::reclaim_tx() {
  for (;;) {
    auto u = guest_.queue(kTx).pop_used();
    if (!u.ok() || !*u) return;
    auto it = tx_in_flight_.find((*u)->first);
    if (it == tx_in_flight_.end()) continue;
    if (it->second) tx_free_.push_back(*it->second);
    tx_in_flight_.erase(it);
  }
}

Result<void> VsockDriver::send(const PacketHeader& h, std::span<const uint8_t> payload) {
  if (payload.size() > o_.tx_buffer_bytes) return make_error("a payload larger than the driver's transmit buffers");
  reclaim_tx();
  auto until = deadline();
  while (tx_free_.empty()) {
    // The device returns transmit buffers as it reads them; it must not need a receive
    // buffer first (an RST it owes waits in its table, not in our transmit buffer).
    MOSS_TRY(bool any, pump(std::min(until, Clock::now() + std::chrono::milliseconds(10))));
    (void)any;
    reclaim_tx();
    if (tx_free_.empty() && Clock::now() >= until) {
      return make_error("the device returned no transmit buffer in time", kErrTimedOut);
    }
  }
  size_t slot = tx_free_.back();
  tx_free_.pop_back();
  const TxSlot& s = tx_slots_[slot];
  auto bytes = vsock::encode_header(h);
  MOSS_TRY_VOID(guest_.memory().write(s.header_gpa, bytes));
  std::vector<virtio::DriverQueue::Buffer> bufs = {{s.header_gpa, kHeaderSize}};
  if (!payload.empty()) {
    MOSS_TRY_VOID(guest_.memory().write(s.payload_gpa, payload));
    bufs.push_back({s.payload_gpa, static_cast<uint32_t>(payload.size())});
  }
  MOSS_TRY(uint16_t head, guest_.queue(kTx).add_chain(bufs, {}));
  tx_in_flight_[head] = slot;
  return guest_.kick_if_needed(kTx);
}

Result<void> VsockDriver::send_chain(const vsock::testing::TxChain& c) {
  std::vector<virtio::DriverQueue::Buffer> readable, writable;
  for (const auto& r : c.readable) {
    MOSS_TRY(uint64_t gpa, guest_.ram().alloc(std::max<size_t>(r.size(), 1), 16));
    MOSS_TRY_VOID(guest_.memory().write(gpa, r));
    readable.push_back({gpa, static_cast<uint32_t>(r.size())});
  }
  for (uint32_t w : c.writable) {
    MOSS_TRY(uint64_t gpa, guest_.ram().alloc(w, 16));
    writable.push_back({gpa, w});
  }
  reclaim_tx();
  MOSS_TRY(uint16_t head, guest_.queue(kTx).add_chain(readable, writable));
  tx_in_flight_[head] = std::nullopt;
  return guest_.kick_if_needed(kTx);
}

Result<void> VsockDriver::wait_sent() {
  return wait_for(
      [&] {
        reclaim_tx();
        return tx_in_flight_.empty();
      },
      "the device to read every packet");
}

void VsockDriver::maybe_credit_update(GuestStream& s) {
  const uint32_t quarter = std::max<uint32_t>(s.buf_alloc / 4, 1);
  uint32_t unreported = s.fwd_cnt - s.told_fwd_cnt;
  uint32_t device_view_free = s.buf_alloc - static_cast<uint32_t>(s.rx_cnt - s.told_fwd_cnt);
  if (unreported > 0 && (unreported >= quarter || device_view_free < quarter)) {
    owed_.push_back(header(s.key, Op::kCreditUpdate));
  }
}

void VsockDriver::handle(VsockPacket p) {
  const PacketHeader& h = p.header;
  if (h.src_cid != vsock::kHostCid || h.dst_cid != o_.guest_cid || h.type != vsock::kTypeStream ||
      (h.op != op_of(Op::kRw) && h.len != 0)) {
    ++device_errors_;
  }
  ConnKey key{h.dst_port, h.src_port};
  auto it = streams_.find(key);
  if (it == streams_.end()) {
    unclaimed_.push_back(std::move(p));
    return;
  }
  GuestStream& s = it->second;
  if (h.op != op_of(Op::kRst)) {
    s.peer_buf_alloc = h.buf_alloc;
    s.peer_fwd_cnt = h.fwd_cnt;
  }
  switch (static_cast<Op>(h.op)) {
    case Op::kResponse:
      s.connected = true;
      break;
    case Op::kRw: {
      // The device may have in flight at most what we granted: buf_alloc minus what it knows
      // we have not consumed (we told it told_fwd_cnt).
      uint64_t outstanding = static_cast<uint32_t>(s.rx_cnt - s.told_fwd_cnt);
      if (outstanding + h.len > s.buf_alloc) ++s.credit_violations;
      s.inbox.append(p.payload);
      s.rx_cnt += h.len;
      break;
    }
    case Op::kCreditRequest:
      ++s.credit_requests;
      owed_.push_back(header(key, Op::kCreditUpdate));
      break;
    case Op::kShutdown:
      s.peer_shutdown |= h.flags;
      break;
    case Op::kRst:
      s.reset = true;
      break;
    case Op::kCreditUpdate:
      break;
    default:
      unclaimed_.push_back(std::move(p));
      break;
  }
}

Result<bool> VsockDriver::pump(Clock::time_point until) {
  for (bool waited = false;; waited = true) {
    bool any = false;
    reclaim_tx();
    for (;;) {
      MOSS_TRY(auto u, guest_.queue(kRx).pop_used());
      if (!u) break;
      auto it = rx_posted_heads_.find(u->first);
      if (it == rx_posted_heads_.end()) return make_error("the device returned a receive buffer it was not given");
      size_t slot = it->second;
      rx_posted_heads_.erase(it);
      --rx_posted_;
      VsockPacket p;
      uint32_t len = u->second;
      if (len < kHeaderSize) {
        ++device_errors_;
      } else {
        std::array<uint8_t, kHeaderSize> raw;
        MOSS_TRY_VOID(guest_.memory().read(rx_slots_[slot].header_gpa, raw));
        p.header = vsock::decode_header(raw);
        if (len != kHeaderSize + p.header.len || p.header.len > o_.rx_buffer_bytes) {
          ++device_errors_;
        } else {
          p.payload.resize(p.header.len);
          MOSS_TRY_VOID(guest_.memory().read(rx_slots_[slot].payload_gpa, p.payload));
        }
        handle(std::move(p));
      }
      if (replenish_) {
        MOSS_TRY_VOID(post_rx_slot(slot));
      } else {
        rx_free_.push_back(slot);
      }
      any = true;
    }
    if (any && replenish_) MOSS_TRY_VOID(guest_.kick_if_needed(kRx));
    for (;;) {
      MOSS_TRY(auto u, guest_.queue(kEvent).pop_used());
      if (!u) break;
      uint64_t gpa = event_heads_.at(u->first);
      event_heads_.erase(u->first);
      MOSS_TRY(uint32_t id, guest_.memory().read_obj<uint32_t>(gpa));
      if (u->second == vsock::kEventSize && id == vsock::kEventTransportReset) {
        ++transport_resets_;
        // As Linux does: every stream of this transport is gone, and the guest's CID is read
        // again from the config (it changes when a restored VM gets a CID of its own).
        for (auto& [key, s] : streams_) s.reset = true;
        o_.guest_cid = config_guest_cid();
      } else {
        ++device_errors_;
      }
      MOSS_TRY_VOID(post_event(gpa));
      MOSS_TRY_VOID(guest_.kick_if_needed(kEvent));
      any = true;
    }
    auto owed = std::exchange(owed_, {});
    for (const PacketHeader& h : owed) MOSS_TRY_VOID(send(h));
    if (any || waited || Clock::now() >= until) return any;
    // Ask for an interrupt, and look once more before sleeping on it.
    if (guest_.queue(kRx).enable_interrupts()) continue;
    auto r = guest_.wait_call(kRx, std::min(until, Clock::now() + std::chrono::milliseconds(20)));
    if (!r.ok() && r.error().err != kErrTimedOut) return std::move(r).take_error();
  }
}

Result<void> VsockDriver::wait_for(const std::function<bool()>& pred, const char* what) {
  auto until = deadline();
  while (!pred()) {
    if (Clock::now() >= until) return make_error(std::string("timed out waiting for ") + what, kErrTimedOut);
    MOSS_TRY_VOID(pump(until));
  }
  return {};
}

Result<VsockPacket> VsockDriver::take_unclaimed(const std::function<bool(const VsockPacket&)>& pred, const char* what) {
  std::optional<VsockPacket> found;
  MOSS_TRY_VOID(wait_for(
      [&] {
        auto it = std::find_if(unclaimed_.begin(), unclaimed_.end(), pred);
        if (it == unclaimed_.end()) return false;
        found = std::move(*it);
        unclaimed_.erase(it);
        return true;
      },
      what));
  return std::move(*found);
}

GuestStream& VsockDriver::stream(ConnKey key) {
  auto it = streams_.find(key);
  MOSS_ASSERT(it != streams_.end());
  return it->second;
}

Result<ConnKey> VsockDriver::connect(uint32_t host_port, uint32_t guest_port) {
  ConnKey key{guest_port, host_port};
  GuestStream s;
  s.key = key;
  s.buf_alloc = o_.buf_alloc;
  streams_[key] = s;
  MOSS_TRY_VOID(send(header(key, Op::kRequest)));
  MOSS_TRY_VOID(wait_for([&] { return stream(key).connected || stream(key).reset; }, "RESPONSE or RST"));
  if (stream(key).reset) {
    streams_.erase(key);
    return make_error("the device refused the connection to host port " + std::to_string(host_port), ECONNREFUSED);
  }
  return key;
}

Result<ConnKey> VsockDriver::accept(uint32_t port) {
  MOSS_TRY(VsockPacket req, take_unclaimed(
                                [&](const VsockPacket& p) { return p.header.op == op_of(Op::kRequest) && p.header.dst_port == port; },
                                "a REQUEST"));
  ConnKey key{port, req.header.src_port};
  GuestStream s;
  s.key = key;
  s.buf_alloc = o_.buf_alloc;
  s.connected = true;
  s.peer_buf_alloc = req.header.buf_alloc;
  s.peer_fwd_cnt = req.header.fwd_cnt;
  streams_[key] = s;
  MOSS_TRY_VOID(send(header(key, Op::kResponse)));
  return key;
}

Result<void> VsockDriver::refuse(uint32_t port) {
  MOSS_TRY(VsockPacket req, take_unclaimed(
                                [&](const VsockPacket& p) { return p.header.op == op_of(Op::kRequest) && p.header.dst_port == port; },
                                "a REQUEST"));
  return send(header({port, req.header.src_port}, Op::kRst));
}

Result<void> VsockDriver::write(ConnKey key, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    GuestStream* s = &stream(key);
    if (s->reset) return make_error("the stream was reset", ECONNRESET);
    if (s->credit() == 0) {
      MOSS_TRY_VOID(wait_for([&] { return stream(key).credit() > 0 || stream(key).reset; }, "credit from the device"));
      continue;
    }
    uint32_t n = std::min<uint32_t>({static_cast<uint32_t>(std::min<size_t>(bytes.size(), UINT32_MAX)), s->credit(), o_.tx_buffer_bytes});
    MOSS_TRY_VOID(send(header(key, Op::kRw, n), bytes.first(n)));
    stream(key).tx_cnt += n;
    bytes = bytes.subspan(n);
  }
  return {};
}

Result<std::vector<uint8_t>> VsockDriver::read(ConnKey key, size_t max) {
  MOSS_TRY_VOID(wait_for([&] { return !stream(key).inbox.empty() || stream(key).eof(); }, "data from the device"));
  GuestStream& s = stream(key);
  std::vector<uint8_t> out = s.inbox.take(max);
  const size_t n = out.size();
  s.fwd_cnt += static_cast<uint32_t>(n);
  maybe_credit_update(s);
  auto owed = std::exchange(owed_, {});
  for (const PacketHeader& h : owed) MOSS_TRY_VOID(send(h));
  return out;
}

Result<std::vector<uint8_t>> VsockDriver::read_exactly(ConnKey key, size_t n) {
  std::vector<uint8_t> out;
  while (out.size() < n) {
    MOSS_TRY(auto got, read(key, n - out.size()));
    if (got.empty()) break;
    out.insert(out.end(), got.begin(), got.end());
  }
  return out;
}

Result<void> VsockDriver::shutdown(ConnKey key, uint32_t flags) { return send(header(key, Op::kShutdown, 0, flags)); }

Result<void> VsockDriver::reset(ConnKey key) {
  auto r = send(header(key, Op::kRst));
  streams_.erase(key);
  return r;
}

uint64_t VsockDriver::credit_violations() const {
  uint64_t n = 0;
  for (const auto& [key, s] : streams_) n += s.credit_violations;
  return n;
}

}  // namespace moss::harness
