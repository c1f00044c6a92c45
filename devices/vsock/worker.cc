#include "devices/vsock/worker.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "base/log.h"
#include "base/syscall.h"
#include "devices/vsock/hybrid.h"

namespace moss::vsock {

runtime::WorkerSpec worker_spec(DeviceOptions options) {
  runtime::WorkerSpec spec;
  spec.description = {"vsock",
                      kNumQueues,
                      {{"guestCid", std::to_string(options.guest_cid)}, {"udsPath", options.uds_path}}};
  spec.make_device = [options](event_base* loop) { return std::make_unique<VsockDevice>(options, loop); };
  return spec;
}

Result<std::unique_ptr<HostListener>> HostListener::create(runtime::Runtime& runtime, int listener) {
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(listener, F_GETFL)));
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(listener, F_SETFL, flags | O_NONBLOCK)));
  std::unique_ptr<HostListener> h(new HostListener(runtime));
  HostListener* self = h.get();
  h->accept_ = Event::on_fd(runtime.loop(), listener, EV_READ | EV_PERSIST, [self](int fd, short) { self->on_accept(fd); });
  h->accept_.add();
  h->timer_ = Event::timer(runtime.loop(), [self](int, short) { self->on_timer(); }, /*persist=*/true);
  h->timer_.add(std::chrono::milliseconds(1000));
  return h;
}

void HostListener::on_accept(int listener) {
  int s = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      LOG_WARN("%s", errno_message("accepting a host program failed", errno).c_str());
    }
    return;
  }
  UniqueFd sock(s);
  if (pending_.size() >= kMaxPendingHosts) {
    LOG_WARN("%zu host programs are already waiting to send CONNECT; closing a new one", kMaxPendingHosts);
    return;
  }
  auto p = std::make_unique<Pending>();
  p->fd = std::move(sock);
  p->deadline_ms = monotonic_ms() + kConnectLineTimeoutMs;
  Pending* raw = p.get();
  p->ev = Event::on_fd(runtime_.loop(), s, EV_READ | EV_PERSIST, [this, raw](int, short) { read_connect_line(*raw); });
  p->ev.add();
  pending_[s] = std::move(p);
}

void HostListener::on_timer() {
  const uint64_t now = monotonic_ms();
  std::vector<int> late;
  for (auto& [fd, p] : pending_) {
    if (p->deadline_ms <= now) late.push_back(fd);
  }
  for (int fd : late) {
    LOG_DEBUG("a host program sent no CONNECT line within %llu ms", static_cast<unsigned long long>(kConnectLineTimeoutMs));
    pending_.erase(fd);
  }
}

void HostListener::read_connect_line(Pending& p) {
  const int fd = p.fd.get();
  // One byte at a time: what follows the newline is the stream's first bytes for the guest,
  // and must stay in the socket. The line is at most kMaxConnectLine bytes.
  for (;;) {
    char ch;
    ssize_t n = ::recv(fd, &ch, 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      LOG_DEBUG("a host program left before sending its CONNECT line");
      pending_.erase(fd);  // Frees the event whose callback this is: return at once.
      return;
    }
    p.line.push_back(ch);
    if (ch == '\n' || p.line.size() >= kMaxConnectLine) break;
  }
  auto port = parse_connect_line(p.line);
  if (!port.ok()) {
    LOG_INFO("refused a host program: %s", port.error().message.c_str());
    pending_.erase(fd);
    return;
  }
  // The runtime only makes VsockDevices (worker_spec).
  auto* device = static_cast<VsockDevice*>(runtime_.device());
  if (device == nullptr) {
    LOG_INFO("refused a host program's CONNECT %u: no guest is connected", *port);
    pending_.erase(fd);
    return;
  }
  UniqueFd sock = std::move(p.fd);
  const uint32_t guest_port = *port;
  pending_.erase(fd);  // Frees the event (and `p`) before the device watches the fd its own way.
  auto r = device->connect_from_host(std::move(sock), guest_port);
  if (!r.ok()) LOG_WARN("refused a host program's CONNECT %u: %s", guest_port, r.error().message.c_str());
}

}  // namespace moss::vsock
