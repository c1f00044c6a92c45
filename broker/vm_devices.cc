#include "broker/vm_devices.h"

#include <signal.h>
#include <sys/wait.h>

#include <utility>

#include "broker/jail.h"
#include "devices/blk/module.h"
#include "devices/modules.h"

namespace moss::vmdevices {

Result<std::vector<device::Device>> plan(const cli::RunOptions& o, device::vsock::Host vsock) {
  const device::Vm vm{o.cpus, o.mem_bytes, !o.no_sandbox};
  MOSS_TRY(std::vector<device::Device> devices, device::blk::plan_disks(o.disks, vm));
  for (const auto& d : o.devices) {
    const device::Module* m = device::find(d.kind);
    if (m == nullptr) return make_error("--device " + d.kind + ": no such kind of device");
    MOSS_TRY(device::Device dev, m->plan(d.options, vm));
    devices.push_back(std::move(dev));
  }
  MOSS_TRY(device::Device v, device::vsock::plan(std::move(vsock), vm));
  devices.push_back(std::move(v));
  return devices;
}

ChildSpec child_spec(const device::WorkerPlan& w, const std::string& dir, bool jailed) {
  ChildSpec spec;
  spec.path = dir + "/" + w.program;
  spec.argv = w.argv;
  spec.fds = w.fds;
  spec.sandbox = jail::worker(w.role, w.limits, jailed);
  return spec;
}

void kill_workers(std::vector<Worker>& workers) {
  for (auto& w : workers) {
    if (w.pid < 0) continue;
    kill(w.pid, SIGKILL);
    waitpid(w.pid, nullptr, 0);
    w.pid = -1;
  }
}

Result<std::vector<Worker>> start_workers(std::vector<device::Device>& devices, const std::string& dir, bool jailed) {
  std::vector<Worker> workers;
  for (auto& d : devices) {
    if (!d.worker) continue;
    auto pid = spawn_child(child_spec(*d.worker, dir, jailed));
    if (!pid) {
      kill_workers(workers);
      return make_error("cannot start the " + d.worker->description + ": " + pid.error().message, pid.error().err);
    }
    d.worker->started();
    workers.push_back({*pid, d.kind, d.worker->description, std::move(d.worker->control)});
  }
  return workers;
}

size_t total_queues(const std::vector<device::Device>& devices) {
  size_t n = 0;
  for (const auto& d : devices) n += d.guest.num_queues;
  return n;
}

void describe(std::vector<device::Device>& devices, ChildSpec& vcpu, ipc::MachineConfig::Builder start) {
  auto list = start.initDevices(static_cast<unsigned>(devices.size()));
  for (unsigned i = 0; i < devices.size(); i++) {
    const device::Device& d = devices[i];
    auto out = list[i];
    out.setName(d.name);
    out.setFd(vcpu.pass_fd(d.vhost_user.get()));
    encode_guest_device(d.guest, out);
  }
}

void vcpu_started(std::vector<device::Device>& devices) {
  for (auto& d : devices) d.vhost_user.reset();
}

}  // namespace moss::vmdevices
