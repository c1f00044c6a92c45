#include "devices/vsock/connection.h"

#include <algorithm>
#include <cstring>

#include "devices/vsock/hybrid.h"

namespace moss::vsock {

std::string describe(ConnKey key) {
  return "guest port " + std::to_string(key.guest_port) + " <-> host port " + std::to_string(key.host_port);
}

// ---- ByteRing ----

void ByteRing::push(std::span<const uint8_t> bytes) {
  MOSS_ASSERT(bytes.size() <= cap_ - size_);
  if (bytes.empty()) return;
  if (buf_.empty()) buf_.resize(cap_);
  size_t tail = (head_ + size_) % cap_;
  size_t first = std::min(bytes.size(), cap_ - tail);
  std::memcpy(buf_.data() + tail, bytes.data(), first);
  std::memcpy(buf_.data(), bytes.data() + first, bytes.size() - first);
  size_ += bytes.size();
}

std::array<std::span<const uint8_t>, 2> ByteRing::peek() const {
  if (size_ == 0) return {};
  size_t first = std::min(size_, cap_ - head_);
  return {std::span<const uint8_t>(buf_.data() + head_, first), std::span<const uint8_t>(buf_.data(), size_ - first)};
}

void ByteRing::pop(size_t n) {
  MOSS_ASSERT(n <= size_);
  size_ -= n;
  head_ = size_ == 0 ? 0 : (head_ + n) % cap_;
}

uint32_t Connection::peer_credit() const {
  // take_credit keeps peer_fwd_cnt within what we sent, so this is the bytes in flight.
  uint32_t in_flight = tx_cnt - peer_fwd_cnt;
  return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
}

// ---- ConnectionTable ----

ConnectionTable::ConnectionTable(uint64_t guest_cid, Limits limits) : guest_cid_(guest_cid), limits_(limits) {
  MOSS_ASSERT(limits.buf_alloc > 0 && limits.max_connections > 0);
}

Connection* ConnectionTable::get(ConnKey key) {
  auto it = conns_.find(key);
  return it == conns_.end() ? nullptr : &it->second;
}

Connection& ConnectionTable::must_get(ConnKey key) {
  Connection* c = get(key);
  MOSS_ASSERT(c != nullptr);  // The device only asks about connections the table announced.
  return *c;
}

const Connection* ConnectionTable::find(ConnKey key) const {
  auto it = conns_.find(key);
  return it == conns_.end() ? nullptr : &it->second;
}

PacketHeader ConnectionTable::header_for(Connection& c, Op op, uint32_t len, uint32_t flags) {
  PacketHeader h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = c.key.host_port;
  h.dst_port = c.key.guest_port;
  h.len = len;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(op);
  h.flags = flags;
  h.buf_alloc = limits_.buf_alloc;
  h.fwd_cnt = c.fwd_cnt;
  // Every packet tells the guest our credit, so none is owed any more.
  c.told_fwd_cnt = c.fwd_cnt;
  c.pending &= static_cast<uint8_t>(~pending::kCreditUpdate);
  return h;
}

PacketHeader ConnectionTable::reset_header(ConnKey key) const {
  PacketHeader h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = key.host_port;
  h.dst_port = key.guest_port;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(Op::kRst);
  return h;
}

void ConnectionTable::queue_reset(ConnKey key) {
  if (resets_.size() >= limits_.max_queued_resets) {
    ++counters_.resets_dropped;
    return;
  }
  resets_.push_back(key);
}

void ConnectionTable::close(Connection& c) {
  const ConnKey key = c.key;
  // Out of the ready queue too, so it never holds more entries than there are connections.
  if (c.queued) ready_.erase(std::find(ready_.begin(), ready_.end(), key));
  actions_.push_back({HostAction::Kind::kClose, key});
  conns_.erase(key);  // `c` is gone.
}

void ConnectionTable::reset(Connection& c) {
  queue_reset(c.key);
  close(c);
}

void ConnectionTable::violation(Connection& c) {
  ++counters_.protocol_violations;
  reset(c);
}

bool ConnectionTable::take_credit(Connection& c, const PacketHeader& h) {
  // The guest's fwd_cnt counts bytes it consumed of those we sent: it may move forward by at
  // most what is in flight. A value behind the one we hold is an older packet's (ignored);
  // one ahead of what we sent is a lie that would have us overrun the guest's buffer.
  uint32_t advance = h.fwd_cnt - c.peer_fwd_cnt;
  uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  if (advance <= in_flight) {
    c.peer_fwd_cnt = h.fwd_cnt;
  } else if (static_cast<int32_t>(advance) > 0) {
    return false;
  }
  c.peer_buf_alloc = h.buf_alloc;
  if (c.peer_credit() > 0) c.credit_requested = false;
  return true;
}

bool ConnectionTable::wants_data(const Connection& c) const {
  return c.state == ConnState::kEstablished && c.host_readable && !c.host_eof && !c.guest_shut_rcv;
}

void ConnectionTable::touch(Connection& c) {
  const bool data = wants_data(c);
  if (data && c.peer_credit() == 0 && !c.credit_requested) {
    c.pending |= pending::kCreditRequest;
    c.credit_requested = true;
  }
  bool work = c.pending != 0 || (data && c.peer_credit() > 0);
  if (work && !c.queued) {
    c.queued = true;
    ready_.push_back(c.key);
  }
}

bool ConnectionTable::maybe_finish(Connection& c) {
  // Nothing can flow either way any more: the guest sends nothing and all it sent is written,
  // and the host sends nothing or the guest takes nothing.
  if (c.state == ConnState::kEstablished && c.guest_shut_send && c.to_host.empty() && (c.host_eof || c.guest_shut_rcv)) {
    reset(c);
    return true;
  }
  return false;
}

void ConnectionTable::on_packet(const Packet& p, uint64_t now_ms) {
  (void)now_ms;
  MOSS_ASSERT(!connecting_);
  const PacketHeader& h = p.header;
  const Op op = static_cast<Op>(h.op);
  const ConnKey key{h.src_port, h.dst_port};
  Connection* c = get(key);
  if (c == nullptr) {
    if (op == Op::kRequest) return guest_request(key, h);
    if (op != Op::kRst) queue_reset(key);  // No such connection (any more).
    return;
  }
  if (op == Op::kRst) return close(*c);
  if (c->state == ConnState::kConnectingToGuest) {
    if (op != Op::kResponse || !take_credit(*c, h)) return violation(*c);
    c->state = ConnState::kEstablished;
    c->deadline_ms = 0;
    ++counters_.connections;
    std::string ok = ok_line(key.host_port);
    c->to_host.push(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ok.data()), ok.size()));
    c->prefix = static_cast<uint32_t>(ok.size());
    actions_.push_back({HostAction::Kind::kSync, key});
    return touch(*c);
  }
  // kConnectingToHost ends inside host_connect_result, before any other packet.
  MOSS_ASSERT(c->state == ConnState::kEstablished);
  if (!take_credit(*c, h)) return violation(*c);
  switch (op) {
    case Op::kRw:
      return on_rw(*c, p);
    case Op::kShutdown:
      return on_shutdown(*c, h.flags);
    case Op::kCreditUpdate:
      break;  // take_credit did it.
    case Op::kCreditRequest:
      c->pending |= pending::kCreditUpdate;
      break;
    default:  // REQUEST or RESPONSE on an open connection.
      return violation(*c);
  }
  touch(*c);
}

void ConnectionTable::guest_request(ConnKey key, const PacketHeader& h) {
  if (conns_.size() >= limits_.max_connections) {
    ++counters_.refused_connections;
    return queue_reset(key);
  }
  Connection c(key, ConnState::kConnectingToHost, limits_.buf_alloc + kMaxOkLine);
  if (!take_credit(c, h)) {
    ++counters_.protocol_violations;
    return queue_reset(key);
  }
  conns_.emplace(key, std::move(c));
  connecting_ = true;
  actions_.push_back({HostAction::Kind::kConnect, key, key.host_port});
}

void ConnectionTable::host_connect_result(ConnKey key, bool connected) {
  MOSS_ASSERT(connecting_);
  connecting_ = false;
  Connection& c = must_get(key);
  MOSS_ASSERT(c.state == ConnState::kConnectingToHost);
  if (!connected) {
    ++counters_.refused_connections;
    queue_reset(key);
    conns_.erase(key);  // Never queued, and no socket to close.
    return;
  }
  c.state = ConnState::kEstablished;
  c.pending |= pending::kResponse;
  ++counters_.connections;
  actions_.push_back({HostAction::Kind::kSync, key});
  touch(c);
}

void ConnectionTable::on_rw(Connection& c, const Packet& p) {
  const uint32_t len = p.header.len;
  if (len == 0) return touch(c);
  if (c.guest_shut_send) return violation(c);  // Data after "I will send no more".
  // What the guest may have in flight: the credit it was last told.
  uint64_t outstanding = static_cast<uint32_t>(c.rx_cnt - c.told_fwd_cnt);
  if (outstanding + len > limits_.buf_alloc) return violation(c);
  for (auto s : p.payload) c.to_host.push(s);
  c.rx_cnt += len;
  actions_.push_back({HostAction::Kind::kSync, c.key});
  touch(c);
}

void ConnectionTable::on_shutdown(Connection& c, uint32_t flags) {
  const bool changed = ((flags & kShutdownRcv) && !c.guest_shut_rcv) || ((flags & kShutdownSend) && !c.guest_shut_send);
  if (flags & kShutdownRcv) c.guest_shut_rcv = true;
  if (flags & kShutdownSend) c.guest_shut_send = true;
  if (maybe_finish(c)) return;
  if (changed) actions_.push_back({HostAction::Kind::kSync, c.key});
  touch(c);
}

Result<ConnKey> ConnectionTable::host_connect(uint32_t guest_port, uint64_t now_ms) {
  if (conns_.size() >= limits_.max_connections) {
    return make_error("the worker already carries its limit of " + std::to_string(limits_.max_connections) + " connections");
  }
  // Fewer than max_connections keys are taken, so this ends within that many steps.
  ConnKey key{guest_port, 0};
  do {
    key.host_port = next_host_port_++;
    if (next_host_port_ < kFirstHostPort) next_host_port_ = kFirstHostPort;  // Wrapped.
  } while (conns_.contains(key));
  Connection c(key, ConnState::kConnectingToGuest, limits_.buf_alloc + kMaxOkLine);
  c.deadline_ms = now_ms + limits_.connect_timeout_ms;
  c.pending = pending::kRequest;
  auto [it, inserted] = conns_.emplace(key, std::move(c));
  MOSS_ASSERT(inserted);
  touch(it->second);
  return key;
}

void ConnectionTable::host_readable(ConnKey key) {
  Connection& c = must_get(key);
  c.host_readable = true;
  touch(c);
}

PacketHeader ConnectionTable::host_data(ConnKey key, uint32_t n) {
  Connection& c = must_get(key);
  MOSS_ASSERT(n > 0 && n <= c.peer_credit() && n <= kMaxPayload && wants_data(c));
  c.tx_cnt += n;
  counters_.bytes_to_guest += n;
  PacketHeader h = header_for(c, Op::kRw, n);
  touch(c);
  return h;
}

uint32_t ConnectionTable::data_budget(ConnKey key) const {
  const Connection* c = find(key);
  if (c == nullptr || !wants_data(*c)) return 0;
  return std::min(c->peer_credit(), kMaxPayload);
}

void ConnectionTable::host_would_block(ConnKey key) { must_get(key).host_readable = false; }

void ConnectionTable::host_eof(ConnKey key, bool peer_closed) {
  Connection& c = must_get(key);
  c.host_readable = false;
  if (c.host_eof) return;
  c.host_eof = true;
  c.pending |= pending::kShutdown;
  c.shutdown_flags |= kShutdownSend | (peer_closed ? kShutdownRcv : 0);
  if (maybe_finish(c)) return;
  touch(c);
}

void ConnectionTable::host_failed(ConnKey key) { reset(must_get(key)); }

std::array<std::span<const uint8_t>, 2> ConnectionTable::to_host(ConnKey key) const {
  auto it = conns_.find(key);
  return it == conns_.end() ? std::array<std::span<const uint8_t>, 2>{} : it->second.to_host.peek();
}

void ConnectionTable::host_written(ConnKey key, size_t n) {
  Connection& c = must_get(key);
  c.to_host.pop(n);
  uint32_t ours = static_cast<uint32_t>(std::min<size_t>(n, c.prefix));
  c.prefix -= ours;
  uint32_t data = static_cast<uint32_t>(n) - ours;
  c.fwd_cnt += data;
  counters_.bytes_to_host += data;
  if (maybe_finish(c)) return;
  const uint32_t quarter = std::max<uint32_t>(limits_.buf_alloc / 4, 1);
  uint32_t unreported = c.fwd_cnt - c.told_fwd_cnt;
  uint32_t guest_free = limits_.buf_alloc - static_cast<uint32_t>(c.rx_cnt - c.told_fwd_cnt);
  if (unreported > 0 && (unreported >= quarter || guest_free < quarter)) {
    c.pending |= pending::kCreditUpdate;
    touch(c);
  }
}

HostSide ConnectionTable::host_side(ConnKey key) const {
  const Connection* c = find(key);
  if (c == nullptr) return {};
  HostSide s;
  s.read = c->state == ConnState::kEstablished && !c->host_readable && !c->host_eof && !c->guest_shut_rcv;
  s.shut_read = c->guest_shut_rcv;
  s.shut_write = c->guest_shut_send && c->to_host.empty();
  return s;
}

void ConnectionTable::expire(uint64_t now_ms) {
  std::vector<ConnKey> late;
  for (auto& [key, c] : conns_) {
    if (c.state == ConnState::kConnectingToGuest && c.deadline_ms <= now_ms) late.push_back(key);
  }
  for (ConnKey key : late) reset(must_get(key));
}

void ConnectionTable::clear() {
  for (auto& [key, c] : conns_) actions_.push_back({HostAction::Kind::kClose, key});
  conns_.clear();
  ready_.clear();
  resets_.clear();
  connecting_ = false;
}

void ConnectionTable::on_refused(const Rejection& r) {
  ++counters_.refused_packets;
  if (!r.header || r.header->op == static_cast<uint16_t>(Op::kRst)) return;  // Never answer an RST.
  const ConnKey key{r.header->src_port, r.header->dst_port};
  if (Connection* c = get(key)) return reset(*c);
  queue_reset(key);
}

std::optional<RxItem> ConnectionTable::take(Connection& c, uint32_t room) {
  auto packet = [&](Op op, uint32_t flags = 0) {
    RxItem item;
    item.header = header_for(c, op, 0, flags);
    item.key = c.key;
    return item;
  };
  if (c.pending & pending::kRequest) {
    c.pending &= static_cast<uint8_t>(~pending::kRequest);
    return packet(Op::kRequest);
  }
  if (c.pending & pending::kResponse) {
    c.pending &= static_cast<uint8_t>(~pending::kResponse);
    return packet(Op::kResponse);
  }
  // Data goes before a pending CREDIT_UPDATE: its header carries the same news.
  if (wants_data(c) && room > 0 && c.peer_credit() > 0) {
    RxItem item;
    item.kind = RxItem::Kind::kData;
    item.key = c.key;
    item.max_bytes = std::min({room, c.peer_credit(), kMaxPayload});
    return item;
  }
  if (c.pending & pending::kShutdown) {
    c.pending &= static_cast<uint8_t>(~pending::kShutdown);
    return packet(Op::kShutdown, c.shutdown_flags);
  }
  if (c.pending & pending::kCreditUpdate) return packet(Op::kCreditUpdate);  // header_for clears it.
  if (c.pending & pending::kCreditRequest) {
    c.pending &= static_cast<uint8_t>(~pending::kCreditRequest);
    return packet(Op::kCreditRequest);
  }
  return std::nullopt;
}

std::optional<RxItem> ConnectionTable::next_rx(uint32_t room) {
  if (!resets_.empty()) {
    RxItem item;
    item.key = resets_.front();
    item.header = reset_header(item.key);
    resets_.pop_front();
    ++counters_.resets_sent;
    return item;
  }
  // Round robin, each connection at most once per call: one that sent goes to the back.
  for (size_t n = ready_.size(); n > 0 && !ready_.empty(); --n) {
    ConnKey key = ready_.front();
    ready_.pop_front();
    Connection* c = get(key);
    MOSS_ASSERT(c != nullptr && c->queued);  // close() takes connections out of the queue.
    c->queued = false;
    auto item = take(*c, room);
    touch(*c);
    if (item) return item;
  }
  return std::nullopt;
}

}  // namespace moss::vsock
