#include "broker/control_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

#include "ipc/channel.h"

namespace moss {
namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(2);  // From connect to a whole request.

}  // namespace

ControlServer::ControlServer(event_base* loop, control::Endpoint endpoint, Hooks hooks)
    : loop_(loop), endpoint_(std::move(endpoint)), hooks_(std::move(hooks)) {
  listening_ = Event::on_fd(loop, endpoint_->listen_fd(), EV_READ | EV_PERSIST, [this](int, short) { accept_clients(); });
  listening_.add();
}

void ControlServer::close() {
  listening_.reset();
  reading_.clear();
  endpoint_.reset();
}

void ControlServer::accept_clients() {
  for (;;) {
    int fd = accept4(endpoint_->listen_fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;  // EAGAIN: all served.
    uint64_t id = next_id_++;
    Client& c = reading_[id];
    c.conn = std::make_shared<UniqueFd>(fd);
    c.readable = Event::on_fd(loop_, fd, EV_READ, [this, id](int, short what) { read_request(id, what); });
    c.readable.add(std::chrono::duration_cast<std::chrono::milliseconds>(kRequestTimeout));
  }
}

void ControlServer::read_request(uint64_t id, short what) {
  auto it = reading_.find(id);
  MOSS_ASSERT(it != reading_.end());
  std::shared_ptr<UniqueFd> conn = it->second.conn;
  // Done with reading: the client's event (the one running this) goes; nothing of it is
  // touched after this line.
  reading_.erase(it);
  if (what & EV_TIMEOUT) return;  // Sent nothing in time: dropped.
  std::vector<uint8_t> buf(ipc::kMaxPacketBytes + 1);
  ssize_t n;
  do {
    n = recv(conn->get(), buf.data(), buf.size(), MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0 || static_cast<size_t>(n) > ipc::kMaxPacketBytes) return;  // Gone, or not one of ours.
  auto request = control::decode_request(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
  if (!request) {
    control::answer_error(conn->get(), request.error().message);
    return;
  }
  serve(std::move(conn), *request);
}

void ControlServer::serve(std::shared_ptr<UniqueFd> conn, const control::Request& request) {
  using V = control::Verb;
  const V verb = request.verb;
  switch (verb) {
    case V::kStats:
      hooks_.stats([conn](const control::VmStats& s) { control::answer_stats(conn->get(), s); });
      return;
    case V::kStop:
      control::answer_stopping(conn->get());
      hooks_.stop();
      return;
    case V::kPause:
    case V::kResume:
      hooks_.pause(verb == V::kPause,
                   [conn, verb](const Result<void>& outcome) { control::answer_pause(conn->get(), verb, outcome); });
      return;
    case V::kAgent:
      control::answer_agent(conn->get(), hooks_.agent ? hooks_.agent() : Result<UniqueFd>(make_error("this VM has no agent")));
      return;
    case V::kSuspend:
      if (!hooks_.suspend) {
        control::answer_error(conn->get(), "this VM cannot be suspended");
        return;
      }
      hooks_.suspend(request.suspend,
                     [conn](const Result<std::string>& outcome) { control::answer_suspend(conn->get(), outcome); });
      return;
  }
}

}  // namespace moss
