// moss-vcpu: the process that owns /dev/kvm and guest RAM for one VM.
//
// Started by the broker with the control socket and the resources it opened for us as
// inherited fds. It never opens host files itself. Protocol: ipc/vcpu.capnp.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include <kj/exception.h>

#include "base/log.h"
#include "base/syscall.h"
#include "ipc/channel.h"
#include "ipc/vcpu.capnp.h"
#include "policies/sandbox.h"
#include "policies/seccomp_filter.h"
#include "vcpu/console_buffer.h"
#include "vcpu/cpu_state_codec.h"
#include "vcpu/machine.h"

namespace moss {
namespace {

Result<void> send_console(int fd, const std::string& bytes) {
  constexpr size_t kChunk = 32 * 1024;
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<ipc::VcpuToBroker>();
    msg.setVersion(ipc::PROTOCOL_VERSION);
    size_t n = std::min(kChunk, bytes.size() - off);
    msg.setConsole(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(bytes.data() + off), n));
    MOSS_TRY_VOID(ipc::send_message(fd, mb));
  }
  return {};
}

Result<void> send_exit(int fd, const MachineExit& e, uint64_t first_exit_ns) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::VcpuToBroker>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  auto x = msg.initExited();
  using R = MachineExit::Reason;
  switch (e.reason) {
    case R::kGuestStatus: x.setReason(ipc::ExitInfo::Reason::GUEST_STATUS); break;
    case R::kReset: x.setReason(ipc::ExitInfo::Reason::RESET); break;
    case R::kPowerOff: x.setReason(ipc::ExitInfo::Reason::POWER_OFF); break;
    case R::kStopped: x.setReason(ipc::ExitInfo::Reason::STOPPED); break;
    case R::kError: x.setReason(ipc::ExitInfo::Reason::ERROR); break;
  }
  x.setStatus(e.status);
  x.setMessage(e.message);
  x.setFirstExitNs(first_exit_ns);
  return ipc::send_message(fd, mb);
}

// Replies to a pause/resume/save/restore request: `fill` sets the answer, or an Error
// becomes a `refused` sentence.
void reply(int ctl, const Result<void>& r, const std::function<void(ipc::VcpuToBroker::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<ipc::VcpuToBroker>();
  msg.setVersion(ipc::PROTOCOL_VERSION);
  if (r) fill(msg);
  else msg.setRefused(r.error().message);
  (void)ipc::send_message(ctl, mb);
}

Result<MachineConfig> read_start(int ctl) {
  MOSS_TRY(auto packet, ipc::receive_message(ctl));
  if (!packet) return make_error("the broker closed the control channel before starting the VM");
  MachineConfig c;
  bool ok = false;
  std::string restore_error;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto msg = packet->root<ipc::BrokerToVcpu>();
    if (msg.getVersion() != ipc::PROTOCOL_VERSION || !msg.isStart()) return;
    auto s = msg.getStart();
    c.mem_bytes = s.getMemBytes();
    c.cpus = s.getCpus();
    c.cmdline = s.getCmdline().cStr();
    c.kvm_fd = s.getKvmFd();
    c.kernel_fd = s.getKernelFd();
    c.initrd_fd = s.getInitrdFd();
    c.mem_fd = s.getMemFd();
    if (s.hasRestore()) {
      // Decoded and checked here, before any KVM object exists (vcpu/cpu_state_codec.h).
      auto restore = s.getRestore();
      auto state = decode_machine_state(restore.getState());
      if (!state) {
        restore_error = "the saved machine cannot be restored: " + state.error().message;
        return;
      }
      MachineRestoreData data;
      data.cpus = std::move(state->cpus);
      data.vm = state->vm;
      data.uart = state->uart;
      data.i8042 = state->i8042;
      data.realtime = restore.getRealtimeClock();
      for (auto d : restore.getState().getDevices()) {
        SavedDevice sd;
        sd.transport.assign(d.getTransport().begin(), d.getTransport().end());
        sd.backend.assign(d.getBackend().begin(), d.getBackend().end());
        data.devices.push_back(std::move(sd));
      }
      c.restore = std::move(data);
    }
    for (auto d : s.getDevices()) {
      c.devices.push_back(VhostUserDeviceSpec{decode_guest_device(d), d.getName().cStr(), d.getFd()});
    }
    ok = true;
  })) {
    return make_error(std::string("the start message is malformed: ") + e->getDescription().cStr());
  }
  if (!restore_error.empty()) return make_error(restore_error);
  if (!ok) return make_error("the first control message is not a start message of this version");
  return c;
}

int run(int ctl, bool jailed) {
  auto config = read_start(ctl);
  if (!config) {
    LOG_ERROR("%s", config.error().message.c_str());
    (void)send_exit(ctl, {MachineExit::Reason::kError, 0, config.error().message}, 0);
    return 1;
  }
  int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int done = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ev < 0 || done < 0) {
    LOG_ERROR("%s", errno_message("eventfd failed", errno).c_str());
    return 1;
  }
  UniqueFd ev_owned(ev), done_owned(done);
  ConsoleBuffer console(ev);
  auto machine = Machine::create(*config, [&console](uint8_t b) { console.put(b); });
  if (!machine) {
    MachineExit e{MachineExit::Reason::kError, 0, machine.error().message};
    (void)send_exit(ctl, e, 0);
    return 1;
  }
  Machine& m = **machine;
  // Set-up is done: from here on, no KVM object can be made or remapped (vcpu.policy).
  if (jailed) {
    if (auto r = policy::forbid_ioctls(kvm_setup_only_ioctls()); !r) {
      (void)send_exit(ctl, {MachineExit::Reason::kError, 0, r.error().message}, 0);
      return 1;
    }
  }
  {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<ipc::VcpuToBroker>();
    msg.setVersion(ipc::PROTOCOL_VERSION);
    auto started = msg.initStarted();
    auto r = m.start(done);
    if (!r) {
      (void)send_exit(ctl, {MachineExit::Reason::kError, 0, r.error().message}, 0);
      return 1;
    }
    started.setFirstRunNs(m.first_run_ns());
    (void)ipc::send_message(ctl, mb);
  }
  bool control_open = true;
  // Console output waits here until kConsoleBatchNs after the last batch went out; the
  // buffer does not signal again while it holds bytes, so nothing spins meanwhile.
  bool console_due = false;
  uint64_t console_sent_ns = 0;
  for (;;) {
    int timeout_ms = -1;
    if (console_due) {
      uint64_t now = monotonic_ns(), at = console_sent_ns + kConsoleBatchNs;
      timeout_ms = now >= at ? 0 : static_cast<int>((at - now + 999'999) / 1'000'000);
    }
    pollfd fds[3] = {{ev, POLLIN, 0}, {done, POLLIN, 0}, {control_open ? ctl : -1, POLLIN, 0}};
    if (poll(fds, 3, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      m.request_stop({MachineExit::Reason::kError, 0, errno_message("poll failed", errno)});
      break;
    }
    if (fds[0].revents) {
      uint64_t v;
      (void)!read(ev, &v, sizeof v);
      console_due = true;
    }
    if (uint64_t now = monotonic_ns(); console_due && now >= console_sent_ns + kConsoleBatchNs) {
      console_due = false;
      console_sent_ns = now;
      auto r = send_console(ctl, console.take());
      if (!r) m.request_stop({MachineExit::Reason::kError, 0, "lost the broker: " + r.error().message});
    }
    if (fds[1].revents) break;
    if (fds[2].revents) {
      auto packet = ipc::receive_message(ctl);
      if (!packet || !*packet) {
        // The broker is gone: nobody is left to report to; end the VM.
        control_open = false;
        m.request_stop({MachineExit::Reason::kStopped, 0, "the broker closed the control channel"});
        continue;
      }
      bool stop = false, bad = false;
      std::string input;
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
        auto msg = (*packet)->root<ipc::BrokerToVcpu>();
        switch (msg.which()) {
          case ipc::BrokerToVcpu::STOP: stop = true; break;
          case ipc::BrokerToVcpu::CONSOLE_INPUT:
            input.assign(reinterpret_cast<const char*>(msg.getConsoleInput().begin()), msg.getConsoleInput().size());
            break;
          case ipc::BrokerToVcpu::PAUSE:
            reply(ctl, m.pause(), [](auto r) { r.setPaused(); });
            break;
          case ipc::BrokerToVcpu::RESUME:
            m.resume();
            reply(ctl, {}, [](auto r) { r.setResumed(); });
            break;
          case ipc::BrokerToVcpu::SAVE_CPU_STATE: {
            auto states = m.save_cpus();
            reply(ctl, states ? Result<void>() : Result<void>(states.error()), [&](auto r) {
              auto list = r.initCpuState(static_cast<unsigned>(states->size()));
              for (unsigned i = 0; i < states->size(); i++) encode_cpu_state((*states)[i], list[i]);
            });
            break;
          }
          case ipc::BrokerToVcpu::RESTORE_CPU_STATE: {
            std::vector<VcpuState> states;
            Result<void> r;
            for (auto s : msg.getRestoreCpuState()) {
              auto d = decode_cpu_state(s);
              if (!d) {
                r = d.error();
                break;
              }
              states.push_back(std::move(*d));
            }
            if (r) r = m.restore_cpus(states);
            reply(ctl, r, [](auto x) { x.setRestored(); });
            break;
          }
          case ipc::BrokerToVcpu::CHECK_SAVE:
            reply(ctl, m.check_save(), [](auto r) { r.setRestored(); });
            break;
          case ipc::BrokerToVcpu::SAVE_MACHINE_STATE: {
            // Devices first: stopping their rings finishes what is in flight, whose
            // completions (used rings in RAM, interrupts in the LAPICs) the vCPU state then
            // holds. A failure leaves the rings stopped until `resume`.
            auto devices = m.save_devices();
            Result<std::vector<VcpuState>> cpus =
                devices ? m.save_cpus() : Result<std::vector<VcpuState>>(devices.error());
            Result<VmState> vm = cpus ? m.save_vm() : Result<VmState>(cpus.error());
            reply(ctl, vm ? Result<void>() : Result<void>(vm.error()), [&](auto r) {
              auto out = r.initMachineState();
              auto devs = out.initDevices(static_cast<unsigned>(devices->size()));
              for (unsigned i = 0; i < devices->size(); i++) {
                const auto& d = (*devices)[i];
                devs[i].setTransport(kj::arrayPtr(d.transport.data(), d.transport.size()));
                devs[i].setBackend(kj::arrayPtr(d.backend.data(), d.backend.size()));
              }
              auto list = out.initCpus(static_cast<unsigned>(cpus->size()));
              for (unsigned i = 0; i < cpus->size(); i++) encode_cpu_state((*cpus)[i], list[i]);
              encode_vm_state(*vm, out.initVm());
              auto uart = m.save_uart();
              out.setUart(kj::arrayPtr(uart.data(), uart.size()));
              auto kbd = m.save_i8042();
              out.setI8042(kj::arrayPtr(kbd.data(), kbd.size()));
            });
            break;
          }
          case ipc::BrokerToVcpu::RESTORE_MACHINE_STATE: {
            // Everything is decoded and checked before KVM sees any of it.
            auto req = msg.getRestoreMachineState();
            auto d = decode_machine_state(req.getState());
            Result<void> r = d ? Result<void>() : Result<void>(d.error());
            // Devices come back only in a fresh process (MachineConfig.restore): their
            // backends' state cannot be rewound under a running VM. Never a partial restore.
            if (r && req.getState().getDevices().size() != 0) {
              r = make_error("a saved machine with devices is restored by starting a fresh vcpu process with it");
            }
            if (r) r = m.restore_machine(d->cpus, d->vm, d->uart, d->i8042, req.getRealtimeClock());
            reply(ctl, r, [](auto x) { x.setRestored(); });
            break;
          }
          default: bad = true; break;
        }
      })) {
        bad = true;
      }
      if (bad) m.request_stop({MachineExit::Reason::kError, 0, "the broker sent an unexpected control message"});
      if (stop) m.request_stop({MachineExit::Reason::kStopped, 0, "stopped by request"});
      if (!input.empty()) m.console_input(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    }
  }
  MachineExit e = m.join();
  (void)send_console(ctl, console.take());
  (void)send_exit(ctl, e, m.first_exit_ns());
  return e.reason == MachineExit::Reason::kError ? 1 : 0;
}

}  // namespace
}  // namespace moss

int main(int argc, char** argv) {
  // Before anything else: the jail the broker began (policies/sandbox.h), including
  // PR_SET_PDEATHSIG, so the VM never outlives its supervisor.
  const bool jailed = moss::sandbox::launched_jailed();  // enter() consumes what says so.
  moss::sandbox::enter(moss::sandbox::Role("vcpu"));
  moss::log_init("moss-vcpu");
  int ctl = -1;
  for (int i = 1; i + 1 < argc; i++) {
    if (!std::strcmp(argv[i], "--control-fd")) ctl = std::atoi(argv[i + 1]);
  }
  if (ctl < 0) {
    std::fprintf(stderr, "moss-vcpu: this program is started by moss; it needs --control-fd N\n");
    return 2;
  }
  return moss::run(ctl, jailed);
}
