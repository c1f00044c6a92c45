// A VM's devices as `moss run` sets them up: planned by their modules (devices/module.h),
// their workers started jailed, their guest devices handed to the vcpu process. Nothing here
// knows a kind of device: --disk and --vhost-user-blk go to the blk module, --device KIND,...
// to KIND's module (devices/modules.h), and the vsock device to the vsock module.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "broker/cli.h"
#include "broker/launcher.h"
#include "broker/worker_supervisor.h"
#include "devices/module.h"
#include "devices/vsock/module.h"
#include "ipc/vcpu.capnp.h"

namespace moss::vmdevices {

// A device worker the broker started for this VM.
using Worker = StartedWorker;

// Plans the VM's devices, in PCI slot order: the disks (/dev/vda first), each --device, then
// the vsock device (with what the broker prepared for its worker).
Result<std::vector<device::Device>> plan(const cli::RunOptions& o, device::vsock::Host vsock);

// How spawn_child() starts a planned worker: `dir/program`, its argv, fds and sandbox.
ChildSpec child_spec(const device::WorkerPlan& w, const std::string& dir, bool jailed);

// Starts the worker of every device that has one, in order; the broker's copies of their fds
// are closed once each runs. On failure those already started are killed and reaped, and the
// error names the worker that failed.
Result<std::vector<Worker>> start_workers(std::vector<device::Device>& devices, const std::string& dir, bool jailed);
// Kills and reaps `workers` (a start that failed after them).
void kill_workers(std::vector<Worker>& workers);

// The queues of all devices together (the vcpu process's fd limit counts them).
size_t total_queues(const std::vector<device::Device>& devices);

// Passes each device's vhost-user connection to the vcpu process (`vcpu`) and describes it in
// the start message's list, in order.
void describe(std::vector<device::Device>& devices, ChildSpec& vcpu, ipc::MachineConfig::Builder start);
// The vcpu process runs: the broker closes its ends of the devices' connections.
void vcpu_started(std::vector<device::Device>& devices);

}  // namespace moss::vmdevices
