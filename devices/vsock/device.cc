#include "devices/vsock/device.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <cstring>

#include "base/log.h"
#include "devices/vsock/hybrid.h"

namespace moss::vsock {
namespace {

constexpr uint64_t fbit(int n) { return uint64_t{1} << n; }

// The writable bytes of `chain` after the header, at most `max`, as iovecs (at most IOV_MAX:
// a read may then fill fewer bytes, which is allowed).
std::vector<iovec> payload_iovecs(const virtio::DescriptorChain& chain, uint32_t max) {
  std::vector<iovec> iov;
  uint64_t skip = kHeaderSize;
  uint64_t left = max;
  for (auto s : chain.writable) {
    if (left == 0 || iov.size() == IOV_MAX) break;
    if (skip >= s.size()) {
      skip -= s.size();
      continue;
    }
    uint64_t n = std::min<uint64_t>(s.size() - skip, left);
    iov.push_back({s.data() + skip, n});
    left -= n;
    skip = 0;
  }
  return iov;
}

uint32_t iov_bytes(const std::vector<iovec>& iov) {
  uint64_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return static_cast<uint32_t>(n);
}

// Whether the peer of a socket that just read EOF has closed both ways (POLLHUP), rather than
// only shut its write side.
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

runtime::VirtioSpec spec_of(uint64_t guest_cid) {
  std::vector<uint8_t> config(kConfigSize);
  for (size_t i = 0; i < kConfigSize; i++) config[i] = static_cast<uint8_t>(guest_cid >> (8 * i));
  return runtime::VirtioSpec{"virtio-vsock",
                             fbit(feature::kVersion1) | fbit(feature::kEventIdx) | fbit(feature::kIndirectDesc),
                             0,
                             kNumQueues,
                             kMaxQueueSize,
                             {"receive", "transmit", "event"},
                             std::move(config),
                             SavedState::kBytes};
}

}  // namespace

uint64_t monotonic_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

VsockDevice::VsockDevice(DeviceOptions options, event_base* loop)
    : VirtioDevice(spec_of(options.guest_cid)),
      options_(std::move(options)),
      loop_(loop),
      table_(options_.guest_cid, options_.limits) {
  MOSS_ASSERT(options_.guest_cid >= kMinGuestCid && options_.guest_cid <= kMaxGuestCid);
  timer_ = Event::timer(loop_, [this](int, short) { on_timer(); }, /*persist=*/true);
  timer_.add(std::chrono::milliseconds(1000));
}

VsockDevice::~VsockDevice() {
  host_events_.clear();  // Before the sockets they watch close.
}

void VsockDevice::watch(int fd, bool read, bool write) {
  host_events_.erase(fd);
  if (!read && !write) return;
  short what = static_cast<short>(EV_PERSIST | (read ? EV_READ : 0) | (write ? EV_WRITE : 0));
  Event ev = Event::on_fd(loop_, fd, what, [this](int ready, short got) {
    on_host_event(ready, (got & EV_READ) != 0, (got & EV_WRITE) != 0);
  });
  ev.add();
  host_events_[fd] = std::move(ev);
}

runtime::Stats VsockDevice::stats() const {
  runtime::Stats s;
  s.requests = counters_.packets_from_guest;
  s.errors = table_.counters().refused_packets + table_.counters().protocol_violations;
  s.bytes_in = table_.counters().bytes_to_host;
  s.bytes_out = table_.counters().bytes_to_guest;
  s.counters = {{"packetsToGuest", counters_.packets_to_guest},
                {"transportResets", counters_.transport_resets},
                {"connections", table_.counters().connections},
                {"refusedConnections", table_.counters().refused_connections}};
  return s;
}

// ---- Rings and state ----

void VsockDevice::process(uint32_t q) {
  if (q == kTxQueue) process_tx();
  if (q == kEventQueue) send_events();
  settle();
}

void VsockDevice::forget_connections() {
  table_.clear();
  run_actions();
  reset_event_pending_ = true;
}

Result<std::vector<uint8_t>> VsockDevice::write_state(const virtio::CommonState& common) const {
  SavedState s;
  static_cast<virtio::CommonState&>(s) = common;
  s.guest_cid = options_.guest_cid;
  return encode_state(s);
}

Result<virtio::CommonState> VsockDevice::read_state(std::span<const uint8_t> bytes) const {
  // The saved guest_cid is the CID the saved VM had. A restored VM gets a new lease (two
  // restores of one spore run side by side), so this worker keeps serving the CID it was
  // started with; the TRANSPORT_RESET after the load (state_loaded) makes the guest's driver
  // read guest_cid again from the config.
  MOSS_TRY(SavedState s, decode_state(bytes));
  return static_cast<virtio::CommonState&&>(std::move(s));
}

void VsockDevice::settle() {
  run_actions();
  fill_rx();
  send_events();
  rings().signal_used();
}

void VsockDevice::on_timer() {
  table_.expire(monotonic_ms());
  settle();
}

// ---- Transmit: guest -> host ----

void VsockDevice::process_tx() {
  if (!rings().ready(kTxQueue)) return;
  virtio::Queue& queue = rings().queue(kTxQueue);
  rings().take_available(kTxQueue, [&](uint16_t head) {
    auto chain = virtio::walk_chain(rings().backend().memory(), rings().config(kTxQueue), head);
    if (!chain.ok()) return rings().break_ring(kTxQueue, chain.error().message);
    Parsed p = parse_packet(*chain, options_.guest_cid);
    ++counters_.packets_from_guest;
    if (p.packet) {
      const uint64_t violations = table_.counters().protocol_violations;
      table_.on_packet(*p.packet, monotonic_ms());
      if (table_.counters().protocol_violations != violations) {
        LOG_DEBUG("%s from guest port %u to host port %u broke the protocol (credit, state or fwd_cnt): reset",
                  op_name(p.packet->header.op), p.packet->header.src_port, p.packet->header.dst_port);
      }
    } else {
      LOG_DEBUG("refused a packet: %s", p.rejection->message.c_str());
      table_.on_refused(*p.rejection);
    }
    // Connect now (the table wants the answer before the next packet), write what came,
    // and answer at once, so a burst of bad packets cannot overflow the table's RST queue.
    run_actions();
    fill_rx();
    // Transmit buffers are only read: nothing written into them.
    auto pushed = queue.push_used(head, 0);
    MOSS_ASSERT(pushed.ok());  // We just popped it.
    rings().pushed(kTxQueue);
  });
}

// ---- Receive: host -> guest ----

VsockDevice::Take VsockDevice::take_rx_buffer(RxBuffer& out, bool ask_for_kick) {
  virtio::Queue& queue = rings().queue(kRxQueue);
  for (;;) {
    auto head = queue.pop_head();
    if (!head.ok()) {
      rings().break_ring(kRxQueue, head.error().message);
      return Take::kBroken;
    }
    if (!*head) {
      // Starved: ask for a kick when the driver adds buffers (and look again if it just did).
      if (ask_for_kick && queue.enable_notification()) continue;
      return Take::kNone;
    }
    auto chain = virtio::walk_chain(rings().backend().memory(), rings().config(kRxQueue), **head);
    if (!chain.ok()) {
      rings().break_ring(kRxQueue, chain.error().message);
      return Take::kBroken;
    }
    if (chain->readable_bytes != 0 || chain->writable_bytes < kHeaderSize) {
      rings().break_ring(kRxQueue, "receive buffer " + std::to_string(**head) + " has " + std::to_string(chain->readable_bytes) +
                                " device-readable and " + std::to_string(chain->writable_bytes) +
                                " writable bytes (it needs none and at least " + std::to_string(kHeaderSize) + ")");
      return Take::kBroken;
    }
    out.head = **head;
    out.room = static_cast<uint32_t>(std::min<uint64_t>(chain->writable_bytes - kHeaderSize, UINT32_MAX));
    out.chain = std::move(*chain);
    return Take::kOk;
  }
}

void VsockDevice::give_back_rx(size_t n) {
  // Buffers taken but not used are the last ones taken: un-pop them, untouched.
  virtio::Queue& q = rings().queue(kRxQueue);
  q.set_last_avail_idx(static_cast<uint16_t>(q.last_avail_idx() - n));
}

void VsockDevice::finish_rx(const RxBuffer& b, const PacketHeader& h, uint32_t payload) {
  auto written = virtio::ChainWriter(b.chain).write(encode_header(h));
  MOSS_ASSERT(written.ok());  // writable_bytes >= kHeaderSize was checked.
  auto pushed = rings().queue(kRxQueue).push_used(b.head, kHeaderSize + payload);
  MOSS_ASSERT(pushed.ok());
  rings().pushed(kRxQueue);
  ++counters_.packets_to_guest;
}

size_t VsockDevice::read_into_rx(RxBuffer& first, const RxItem& item, size_t budget) {
  auto sock = sockets_.find(item.key);
  MOSS_ASSERT(sock != sockets_.end());  // Established connections have a socket.
  const int fd = sock->second.fd.get();
  // One read fills this buffer and, while the guest's credit lasts (up to 64 KiB a turn),
  // more: one system call per turn rather than per 4 KiB buffer.
  const uint32_t want = table_.data_budget(item.key);
  std::vector<RxBuffer> more;
  std::vector<uint32_t> caps;
  std::vector<iovec> iov = payload_iovecs(first.chain, item.max_bytes);
  caps.push_back(iov_bytes(iov));
  uint32_t planned = caps[0];
  while (planned < want && more.size() + 1 < budget) {
    RxBuffer b;
    if (take_rx_buffer(b, false) != Take::kOk) break;  // None left, or the queue just broke.
    std::vector<iovec> part = payload_iovecs(b.chain, std::min(b.room, want - planned));
    if (part.empty() || iov.size() + part.size() > IOV_MAX) {
      give_back_rx(1);
      break;
    }
    iov.insert(iov.end(), part.begin(), part.end());
    caps.push_back(iov_bytes(part));
    planned += caps.back();
    more.push_back(std::move(b));
  }
  ssize_t n = ::readv(fd, iov.data(), static_cast<int>(iov.size()));
  if (n <= 0) {
    give_back_rx(more.size());
    if (n == 0) {
      table_.host_eof(item.key, peer_closed(fd));
      sync(item.key);
    } else if (errno == EAGAIN || errno == EINTR) {
      table_.host_would_block(item.key);
      sync(item.key);
    } else {
      LOG_DEBUG("%s", errno_message("reading the host socket of " + describe(item.key) + " failed", errno).c_str());
      table_.host_failed(item.key);
    }
    return 0;
  }
  // One packet per buffer, in order, each as long as what landed in it.
  size_t left = static_cast<size_t>(n), used = 0;
  for (size_t i = 0; i < caps.size() && left > 0; i++, used++) {
    uint32_t len = static_cast<uint32_t>(std::min<size_t>(left, caps[i]));
    finish_rx(i == 0 ? first : more[i - 1], table_.host_data(item.key, len), len);
    left -= len;
  }
  give_back_rx(more.size() + 1 - used);
  return used;
}

void VsockDevice::fill_rx() {
  if (!table_.has_rx_work() || !rings().ready(kRxQueue)) return;
  size_t budget = rings().config(kRxQueue).size;
  while (table_.has_rx_work() && budget > 0 && !rings().broken(kRxQueue)) {
    RxBuffer b;
    if (take_rx_buffer(b, true) != Take::kOk) return;
    size_t used = 0;
    while (used == 0 && !rings().broken(kRxQueue)) {
      auto item = table_.next_rx(b.room);
      if (!item) break;
      if (item->kind == RxItem::Kind::kPacket) {
        finish_rx(b, item->header, 0);
        used = 1;
      } else {
        used = read_into_rx(b, *item, budget);
      }
      run_actions();
    }
    if (used == 0) {
      if (!rings().broken(kRxQueue)) give_back_rx(1);  // Nothing for this buffer after all.
      return;
    }
    budget -= std::min(budget, used);
  }
  // Out of budget with work left: come back after the loop has served everything else.
  if (budget == 0 && table_.has_rx_work()) rings().kick_self(kRxQueue);
}

// ---- Event queue ----

void VsockDevice::send_events() {
  if (!reset_event_pending_ || !rings().ready(kEventQueue)) return;
  virtio::Queue& queue = rings().queue(kEventQueue);
  for (;;) {
    auto head = queue.pop_head();
    if (!head.ok()) return rings().break_ring(kEventQueue, head.error().message);
    if (!*head) {
      if (queue.enable_notification()) continue;
      return;
    }
    auto chain = virtio::walk_chain(rings().backend().memory(), rings().config(kEventQueue), **head);
    if (!chain.ok()) return rings().break_ring(kEventQueue, chain.error().message);
    if (chain->readable_bytes != 0 || chain->writable_bytes < kEventSize) {
      return rings().break_ring(kEventQueue, "event buffer " + std::to_string(**head) + " cannot hold a 4-byte event");
    }
    auto written = virtio::ChainWriter(*chain).write_obj<uint32_t>(kEventTransportReset);
    MOSS_ASSERT(written.ok());
    auto pushed = queue.push_used(**head, kEventSize);
    MOSS_ASSERT(pushed.ok());
    rings().pushed(kEventQueue);
    reset_event_pending_ = false;
    ++counters_.transport_resets;
    LOG_INFO("sent TRANSPORT_RESET to the guest");
    return;
  }
}

// ---- Host sockets ----

Result<void> VsockDevice::connect_from_host(UniqueFd sock, uint32_t port) {
  MOSS_TRY(ConnKey key, table_.host_connect(port, monotonic_ms()));
  by_fd_[sock.get()] = key;
  sockets_[key] = HostSocket{std::move(sock)};
  LOG_DEBUG("a host program asks for guest port %u (%s)", port, describe(key).c_str());
  settle();
  return {};
}

void VsockDevice::connect_to_host(ConnKey key, uint32_t port) {
  std::string path = guest_port_path(options_.uds_path, port);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  bool ok = false;
  UniqueFd fd;
  if (options_.connect_host) {
    auto got = options_.connect_host(port);
    if (got.ok()) fd = std::move(*got);
    else LOG_DEBUG("guest connection to host port %u refused: %s", port, got.error().message.c_str());
    ok = fd.valid();
  } else {
    fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  }
  if (!options_.connect_host && fd.valid() && path.size() < sizeof addr.sun_path) {
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    // A Unix stream connect completes at once or fails (EAGAIN: the listener's backlog is full).
    ok = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    if (!ok) LOG_DEBUG("%s", errno_message("guest connection to " + path + " refused", errno).c_str());
  }
  if (ok) {
    by_fd_[fd.get()] = key;
    sockets_[key] = HostSocket{std::move(fd)};
  }
  table_.host_connect_result(key, ok);
}

void VsockDevice::flush(ConnKey key, HostSocket& s) {
  for (;;) {
    auto pieces = table_.to_host(key);
    if (pieces[0].empty()) return;
    iovec iov[2] = {{const_cast<uint8_t*>(pieces[0].data()), pieces[0].size()},
                    {const_cast<uint8_t*>(pieces[1].data()), pieces[1].size()}};
    // sendmsg with MSG_NOSIGNAL: a host program that went away is EPIPE, not SIGPIPE.
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = pieces[1].empty() ? 1 : 2;
    ssize_t n = ::sendmsg(s.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      table_.host_written(key, static_cast<size_t>(n));
      if (table_.find(key) == nullptr) return;  // That finished the connection.
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      s.write_blocked = true;
      return;
    }
    LOG_DEBUG("%s", errno_message("writing the host socket of " + describe(key) + " failed", errno).c_str());
    table_.host_failed(key);
    return;
  }
}

void VsockDevice::sync(ConnKey key) {
  auto it = sockets_.find(key);
  if (it == sockets_.end()) return;
  HostSocket& s = it->second;
  if (!s.write_blocked) flush(key, s);
  if (table_.find(key) == nullptr) return;  // Finished or failed: its kClose is queued.
  HostSide side = table_.host_side(key);
  if (side.shut_read && !s.shut_read) {
    s.shut_read = true;
    ::shutdown(s.fd.get(), SHUT_RD);  // The host program's writes now fail (EPIPE).
  }
  if (side.shut_write && !s.shut_write) {
    s.shut_write = true;
    ::shutdown(s.fd.get(), SHUT_WR);  // The host program reads EOF.
  }
  if (side.read != s.watch_read || s.write_blocked != s.watch_write) {
    s.watch_read = side.read;
    s.watch_write = s.write_blocked;
    watch(s.fd.get(), s.watch_read, s.watch_write);
  }
}

void VsockDevice::close_socket(ConnKey key) {
  auto it = sockets_.find(key);
  if (it == sockets_.end()) return;
  if (it->second.watch_read || it->second.watch_write) watch(it->second.fd.get(), false, false);
  by_fd_.erase(it->second.fd.get());
  sockets_.erase(it);
}

void VsockDevice::run_actions() {
  for (auto actions = table_.take_actions(); !actions.empty(); actions = table_.take_actions()) {
    for (const HostAction& a : actions) {
      switch (a.kind) {
        case HostAction::Kind::kConnect:
          connect_to_host(a.key, a.port);
          break;
        case HostAction::Kind::kSync:
          sync(a.key);
          break;
        case HostAction::Kind::kClose:
          close_socket(a.key);
          break;
      }
    }
  }
}

void VsockDevice::on_host_event(int fd, bool readable, bool writable) {
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return;
  const ConnKey key = it->second;
  HostSocket& s = sockets_.at(key);
  if (writable) s.write_blocked = false;
  if (readable && table_.host_side(key).read) table_.host_readable(key);
  sync(key);
  settle();
}

}  // namespace moss::vsock
