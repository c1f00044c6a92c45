#include "broker/worker_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "broker/launcher.h"
#include "base/log.h"
#include "broker/worker_control.h"
#include "ipc/channel.h"

namespace moss {

WorkerSupervisor::WorkerSupervisor(event_base* loop, std::vector<StartedWorker> workers, Hooks hooks)
    : hooks_(std::move(hooks)), loop_(loop) {
  for (auto& w : workers) {
    auto s = std::make_unique<Supervised>();
    s->w = std::move(w);
    if (s->w.control) {
      int fd = s->w.control.get();
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      Supervised* p = s.get();
      s->readable = Event::on_fd(loop, fd, EV_READ | EV_PERSIST, [this, p](int, short) { read_control(*p); });
      s->readable.add();
    }
    workers_.push_back(std::move(s));
  }
  failure_grace_ = Event::timer(loop, [this](int, short) {
    // The vcpu process lives on without the device: a real failure.
    if (hooks_.stop_vm()) stopped_vm_ = true;
  });
}

void WorkerSupervisor::reap() {
  for (auto& s : workers_) {
    if (s->reaped) continue;
    int status;
    if (waitpid(s->w.pid, &status, WNOHANG) != s->w.pid) continue;
    s->reaped = true;
    if (s->asked) give_up(*s, "exited before it answered");
    judge_death(*s, status);
  }
}

void WorkerSupervisor::judge_death(Supervised& s, int status) {
  // After the loop (stop_all) the VM is over: nothing is left to judge or stop. An exit
  // report the vcpu process sent before closing its connections explains the exit too.
  if (loop_over_ || !failure_.empty() || hooks_.vm_ended()) return;
  failure_ = "the " + s.w.description + " (pid " + std::to_string(s.w.pid) + ") " + describe_wait_status(status) +
             " while the VM was running";
  exit_clean_ = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (exit_clean_) {
    // A worker ends cleanly when its vhost-user connection closes: the vcpu process is most
    // likely on its way out (its SIGCHLD comes after its sockets close). Judge in a moment.
    failure_grace_.add(std::chrono::seconds(1));
    return;
  }
  // The guest's device is gone: its I/O would hang forever. End the VM now, in order (its
  // vCPUs leave KVM_RUN, the vcpu process exits and the other workers see their connections
  // close), with the usual SIGKILL after the grace period.
  hooks_.stop_vm();
}

void WorkerSupervisor::stop_all() {
  loop_over_ = true;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 100; i++) {
      reap();
      bool all = true;
      for (const auto& s : workers_) all = all && s->reaped;
      if (all) return;
      usleep(10000);
    }
    for (const auto& s : workers_) {
      if (!s->reaped) kill(s->w.pid, round == 0 ? SIGTERM : SIGKILL);
    }
  }
  for (const auto& s : workers_) {
    if (!s->reaped) LOG_WARN("the %s (pid %d) did not exit", s->w.description.c_str(), s->w.pid);
  }
}

std::vector<control::ProcessStats> WorkerSupervisor::process_stats() const {
  std::vector<control::ProcessStats> out;
  for (const auto& s : workers_) {
    if (!s->reaped) out.push_back(control::process_stats(s->w.description, s->w.pid));
  }
  return out;
}

void WorkerSupervisor::collect_stats(std::chrono::milliseconds deadline, StatsDone done) {
  if (round_) {
    round_->clients.push_back(std::move(done));
    return;
  }
  round_.emplace();
  round_->clients.push_back(std::move(done));
  round_->limit = deadline;
  round_->deadline = Event::timer(loop_, [this](int, short) { finish_round(); });
  round_->deadline.add(deadline);
  for (auto& s : workers_) {
    s->answer.reset();
    s->problem.clear();
    s->asked = false;
    if (!s->reaped && s->w.control) ask(*s);
  }
  maybe_finish_round();  // Nobody to ask: at once.
}

void WorkerSupervisor::ask(Supervised& s) {
  std::vector<uint8_t> packet = worker::encode_request(worker::Request::kStats);
  // Never blocks: a worker whose channel is full (it reads nothing) is just missing.
  if (send(s.w.control.get(), packet.data(), packet.size(), MSG_DONTWAIT | MSG_NOSIGNAL) !=
      static_cast<ssize_t>(packet.size())) {
    s.problem = errno_message("cannot be asked", errno);
    return;
  }
  s.outstanding++;
  s.asked = true;
}

void WorkerSupervisor::read_control(Supervised& s) {
  std::vector<uint8_t> buf(ipc::kMaxPacketBytes + 1);
  for (;;) {
    ssize_t n = recv(s.w.control.get(), buf.data(), buf.size(), MSG_TRUNC | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      // The worker closed its channel (or it broke): nothing more will come on it. Our own
      // event goes last; nothing of the callback is touched after it.
      if (s.asked) give_up(s, "closed its control channel");
      s.readable.reset();
      s.w.control.reset();
      return;
    }
    take_reply(s, std::span<const uint8_t>(buf.data(), std::min(static_cast<size_t>(n), buf.size())));
  }
}

void WorkerSupervisor::take_reply(Supervised& s, std::span<const uint8_t> packet) {
  if (s.outstanding > 0) s.outstanding--;
  if (s.outstanding > 0 || !s.asked) return;  // The late answer to an earlier round.
  if (packet.size() > ipc::kMaxPacketBytes) return give_up(s, "sent a reply that is too large");
  auto reply = worker::decode_reply(packet);
  if (!reply) return give_up(s, reply.error().message);
  if (reply->kind == worker::Reply::Kind::kError) return give_up(s, "refused: " + reply->error);
  if (reply->kind != worker::Reply::Kind::kStats) return give_up(s, "answered a different request");
  const auto& st = reply->stats;
  s.answer = control::DiskStats{s.w.description, st.counter("readRequests"), st.counter("writeRequests"),
                                st.counter("flushRequests"), st.counter("otherRequests"), st.bytes_out, st.bytes_in,
                                st.errors, st.in_flight};
  s.asked = false;
  maybe_finish_round();
}

void WorkerSupervisor::give_up(Supervised& s, std::string problem) {
  s.problem = std::move(problem);
  s.asked = false;
  maybe_finish_round();
}

void WorkerSupervisor::maybe_finish_round() {
  if (!round_) return;
  for (const auto& s : workers_) {
    if (s->asked) return;
  }
  finish_round();
}

void WorkerSupervisor::finish_round() {
  // Out of round_ first: a client may start the next round; the deadline event (perhaps the
  // one running this) goes when `r` does, after which nothing of it is touched.
  Round r = std::move(*round_);
  round_.reset();
  WorkerStatsRound out;
  for (auto& s : workers_) {
    if (s->answer) out.disks.push_back(*s->answer);
    else if (!s->problem.empty()) out.missing.push_back(s->w.description + ": " + s->problem);
    else if (s->asked) out.missing.push_back(s->w.description + ": did not answer within " + std::to_string(r.limit.count()) + " ms");
    s->asked = false;
  }
  for (auto& client : r.clients) client(out);
}

}  // namespace moss
