#include "broker/vcpu_link.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>

#include <kj/exception.h>

#include "base/log.h"
#include "ipc/channel.h"

namespace moss {

VcpuLink::VcpuLink(event_base* loop, pid_t pid, UniqueFd control, Hooks hooks)
    : pid_(pid), control_(std::move(control)), hooks_(std::move(hooks)) {
  int flags = fcntl(control_.get(), F_GETFL);
  fcntl(control_.get(), F_SETFL, flags | O_NONBLOCK);
  readable_ = Event::on_fd(loop, control_.get(), EV_READ | EV_PERSIST, [this](int, short) { drain(); });
  readable_.add();
  stop_grace_ = Event::timer(loop, [this](int, short) { kill("did not stop in time"); });
  exit_grace_ = Event::timer(loop, [this](int, short) { lingers(); });
}

Result<void> VcpuLink::send(const std::function<void(ipc::BrokerToVcpu::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::BrokerToVcpu>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  fill(msg);
  return ipc::send_message(control_.get(), mb);
}

void VcpuLink::stop() {
  if (!send([](auto m) { m.setStop(); })) kill("could not be asked to stop");
  stop_grace_.add(std::chrono::seconds(kStopGraceSeconds));
}

void VcpuLink::kill(const char* why) {
  if (reaped_) return;
  LOG_WARN("the vcpu process (pid %d) %s; killing it", pid_, why);
  ::kill(pid_, SIGKILL);
}

void VcpuLink::request(const std::function<void(ipc::BrokerToVcpu::Builder)>& fill, Waiter waiter) {
  if (reaped_ || have_exit_) {
    waiter(make_error("the vcpu process has ended"));
    return;
  }
  auto sent = send(fill);
  if (!sent) {
    waiter(sent.error());
    return;
  }
  waiting_.push_back(std::move(waiter));
}

void VcpuLink::answer(const Result<ipc::VcpuToBroker::Reader>& a) {
  if (waiting_.empty()) return;
  Waiter w = std::move(waiting_.front());
  waiting_.pop_front();
  w(a);
}

namespace {

// A yes-or-refused answer: ok when it is `expected`.
Result<void> plain_answer(const Result<ipc::VcpuToBroker::Reader>& a, ipc::VcpuToBroker::Which expected) {
  if (!a) return a.error();
  if (a->which() == expected) return {};
  if (a->isRefused()) return make_error(a->getRefused().cStr());
  return make_error("the vcpu process answered something else");
}

}  // namespace

void VcpuLink::set_paused(bool pause, PauseDone done) {
  request(
      [pause](auto m) {
        if (pause) m.setPause();
        else m.setResume();
      },
      [this, pause, done = std::move(done)](const Result<ipc::VcpuToBroker::Reader>& a) {
        Result<void> r = plain_answer(a, pause ? ipc::VcpuToBroker::PAUSED : ipc::VcpuToBroker::RESUMED);
        if (r) paused_ = pause;
        done(r);
      });
}

void VcpuLink::check_save(PauseDone done) {
  request([](auto m) { m.setCheckSave(); }, [done = std::move(done)](const Result<ipc::VcpuToBroker::Reader>& a) {
    done(plain_answer(a, ipc::VcpuToBroker::RESTORED));
  });
}

void VcpuLink::save_machine(StateDone done) {
  request([](auto m) { m.setSaveMachineState(); }, [done = std::move(done)](const Result<ipc::VcpuToBroker::Reader>& a) {
    if (a && a->isMachineState()) {
      auto copy = std::make_unique<capnp::MallocMessageBuilder>();
      copy->setRoot(a->getMachineState());
      done(std::move(copy));
      return;
    }
    Result<void> r = plain_answer(a, ipc::VcpuToBroker::MACHINE_STATE);
    done(r ? make_error("the vcpu process answered something else") : r.error());
  });
}

void VcpuLink::console_input(const char* data, size_t size) {
  (void)send([&](auto m) { m.setConsoleInput(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(data), size)); });
}

void VcpuLink::drain() {
  for (;;) {
    auto packet = ipc::receive_message(control_.get());
    if (!packet) {
      if (packet.error().err == EAGAIN) return;
      protocol_error_ = packet.error().message;
    } else if (*packet) {
      bool ok = false;
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { ok = handle_packet((*packet)->root<ipc::VcpuToBroker>()); })) {
        protocol_error_ = std::string("a control message from the vcpu process is malformed: ") + e->getDescription().cStr();
      }
      if (ok) continue;
    }
    // EOF or a bad message: stop listening; the child's exit (SIGCHLD) ends the session.
    readable_.del();
    if (!protocol_error_.empty()) kill("sent a malformed control message");
    return;
  }
}

bool VcpuLink::handle_packet(ipc::VcpuToBroker::Reader msg) {
  if (msg.getVersion() != ipc::PROTOCOL_VERSION) {
    protocol_error_ = "the vcpu process speaks control protocol version " + std::to_string(msg.getVersion());
    return false;
  }
  switch (msg.which()) {
    case ipc::VcpuToBroker::CONSOLE: {
      auto data = msg.getConsole();
      hooks_.console(data.begin(), data.size());
      return true;
    }
    case ipc::VcpuToBroker::STARTED: first_run_ns_ = msg.getStarted().getFirstRunNs(); return true;
    case ipc::VcpuToBroker::PAUSED:
    case ipc::VcpuToBroker::RESUMED:
    case ipc::VcpuToBroker::REFUSED:
    case ipc::VcpuToBroker::CPU_STATE:
    case ipc::VcpuToBroker::MACHINE_STATE:
    case ipc::VcpuToBroker::RESTORED:
      if (waiting_.empty()) {
        if (!msg.isCpuState() && !msg.isMachineState()) return true;  // An answer to nobody (a late one).
        protocol_error_ = "the vcpu process sent machine state nobody asked for";
        return false;
      }
      answer(msg);
      return true;
    case ipc::VcpuToBroker::EXITED: record_exit(msg.getExited()); return true;
  }
  return true;
}

void VcpuLink::record_exit(ipc::ExitInfo::Reader x) {
  // The VM has ended; the process should be gone in a moment. If it is not (a kernel that
  // never finishes tearing the VM down), do not hang the user on it.
  if (!have_exit_) exit_grace_.add(std::chrono::seconds(kExitGraceSeconds));
  have_exit_ = true;
  exit_ = {x.getReason(), x.getStatus(), x.getMessage().cStr()};
  first_exit_ns_ = x.getFirstExitNs();
  LOG_INFO("the vcpu process reports the end of the VM: %s (status %d)", exit_.message.c_str(), exit_.status);
}

void VcpuLink::lingers() {
  if (reaped_) return;
  if (lingering_++ == 0) {
    kill("did not exit after the VM ended");
    exit_grace_.add(std::chrono::seconds(kExitGraceSeconds));
    return;
  }
  // SIGKILL did not reap it either: it is stuck in the kernel. The guest's result is known.
  LOG_WARN("the vcpu process (pid %d) is stuck in the kernel after the VM ended; leaving it", pid_);
  hooks_.ended();
}

bool VcpuLink::reap() {
  if (reaped_) return true;
  int status;
  rusage ru{};
  if (wait4(pid_, &status, WNOHANG, &ru) != pid_) return false;
  reaped_ = true;
  wait_status_ = status;
  usage_ = ru;
  drain();  // Whatever the child sent before it exited (its exit report).
  while (!waiting_.empty()) answer(make_error("the vcpu process ended before it answered"));
  hooks_.ended();
  return true;
}

}  // namespace moss
