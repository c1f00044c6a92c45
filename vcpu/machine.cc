#include "vcpu/machine.h"

#include <signal.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "base/file.h"
#include "base/log.h"
#include "base/syscall.h"
#include "vcpu/acpi.h"
#include "vcpu/bzimage.h"
#include "vcpu/mptable.h"
#include "vcpu/x86.h"

namespace moss {
namespace {

constexpr uint32_t kUartIrq = 4;
constexpr int kKickSignal = SIGUSR1;

void kick_handler(int) {}  // Only there to make KVM_RUN return EINTR.

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%" PRIx64, v);
  return b;
}

}  // namespace

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {

// Device workers map guest RAM's file: sealed, its size can never change under them (a shrink
// would turn their accesses into SIGBUS). The broker's memfd must already be so; ours is
// made so here.
constexpr int kRamSeals = F_SEAL_SHRINK | F_SEAL_GROW;

Result<UniqueFd> guest_ram_file(const MachineConfig& config) {
  if (config.mem_fd >= 0) {
    UniqueFd fd(config.mem_fd);
    struct stat st;
    MOSS_TRY_VOID(MOSS_SYS(fstat(fd.get(), &st)));
    int seals = fcntl(fd.get(), F_GET_SEALS);
    if (static_cast<uint64_t>(st.st_size) != config.mem_bytes || seals < 0 || (seals & kRamSeals) != kRamSeals) {
      return make_error("the guest RAM file the broker passed is not a sealed memfd of " +
                        std::to_string(config.mem_bytes) + " bytes");
    }
    return fd;
  }
  MOSS_TRY(int mfd, MOSS_SYS(memfd_create("moss-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  UniqueFd fd(mfd);
  MOSS_TRY_VOID(MOSS_SYS(ftruncate(mfd, static_cast<off_t>(config.mem_bytes))));
  MOSS_TRY_VOID(MOSS_SYS(fcntl(mfd, F_ADD_SEALS, kRamSeals | F_SEAL_SEAL)));
  return fd;
}

}  // namespace

Result<std::unique_ptr<Machine>> Machine::create(const MachineConfig& config, ConsoleFn console) {
  std::unique_ptr<Machine> m(new Machine());
  m->config_ = config;
  m->console_ = std::move(console);
  MOSS_TRY(KvmVm vm, KvmVm::create(config.kvm_fd));
  m->vm_ = std::make_unique<KvmVm>(std::move(vm));
  MOSS_TRY_VOID(m->vm_->create_platform());

  // Guest RAM: one memfd (later shared with device workers), low part below the PCI hole and
  // the rest above 4 GiB, mapped contiguously in our address space.
  auto map = boot::memory_map(config.mem_bytes);
  MOSS_TRY(m->memfd_, guest_ram_file(config));
  const int mfd = m->memfd_.get();
  void* ram = mmap(nullptr, config.mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, mfd, 0);
  if (ram == MAP_FAILED) return sys_error("map guest memory");
  m->ram_ = ram;
  m->ram_size_ = config.mem_bytes;
  auto* base = static_cast<uint8_t*>(ram);
  std::vector<GuestRegion> regions{{0, map.low_bytes, base}};
  MOSS_TRY_VOID(m->vm_->set_memory(0, 0, map.low_bytes, base));
  if (map.high_bytes) {
    regions.push_back({boot::kHighRamStart, map.high_bytes, base + map.low_bytes});
    MOSS_TRY_VOID(m->vm_->set_memory(1, boot::kHighRamStart, map.high_bytes, base + map.low_bytes));
  }
  m->memory_ = GuestMemory(std::move(regions));

  Machine* self = m.get();
  m->uart_ = std::make_unique<Uart>([self](uint8_t b) { self->console_(b); },
                                    [self](bool level) {
                                      auto r = self->vm_->irq_line(kUartIrq, level);
                                      if (!r) LOG_ERROR("%s", r.error().message.c_str());
                                    });

  MOSS_TRY(auto supported, kvm_supported_cpuid(config.kvm_fd));
  MOSS_TRY(auto listed_msrs, kvm_msr_index_list(config.kvm_fd));
  for (uint32_t i = 0; i < config.cpus; i++) {
    MOSS_TRY(KvmVcpu v, m->vm_->create_vcpu(i));
    // A restored vCPU gets the CPUID its guest saw (the broker checked this host offers it);
    // restore_vcpu_state then finds it in place.
    if (config.restore && i < config.restore->cpus.size()) MOSS_TRY_VOID(v.set_cpuid(config.restore->cpus[i].cpuid));
    else MOSS_TRY_VOID(v.set_cpuid(x86::cpuid_for_vcpu(supported, i, config.cpus)));
    MOSS_TRY_VOID(v.set_msrs(x86::boot_msrs()));
    MOSS_TRY_VOID(v.setup_lapic_lints());
    if (i == 0) {
      FdKvmIoctl io(v.fd());
      MOSS_TRY(m->msr_indices_, kvm_saveable_msrs(io, listed_msrs));
      MOSS_TRY(m->state_caps_, kvm_state_caps(m->vm_->fd(), v.fd()));
    }
    m->vcpus_.push_back(std::move(v));
  }
  m->ioeventfd_any_length_ = kvm_check_extension(m->vm_->fd(), KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0;
  for (const auto& spec : config.devices) MOSS_TRY_VOID(m->add_vhost_user_device(spec));
  if (config.restore) {
    MOSS_TRY_VOID(m->restore_from(*config.restore));
    m->config_.restore.reset();  // The state is applied; no second copy of it stays around.
  } else {
    MOSS_TRY_VOID(m->load_kernel(config));
  }
  return m;
}

Result<void> Machine::add_vhost_user_device(const VhostUserDeviceSpec& spec) {
  UniqueFd sock(spec.fd);
  size_t index = virtio_.size();
  if (index >= 31) return make_error("too many PCI devices (at most 31)");
  // A backend that stops answering must not hang the vCPU that asked it something.
  timeval timeout{10, 0};
  MOSS_TRY_VOID(MOSS_SYS(setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout)));
  std::vector<SharedRegion> shared;
  auto* base = static_cast<uint8_t*>(ram_);
  for (const auto& r : memory_.regions()) {
    shared.push_back({r.gpa, r.size, r.host, memfd_.get(), static_cast<uint64_t>(r.host - base)});
  }
  auto backend = VhostUserDevice::connect(std::move(sock), spec, shared);
  if (!backend) return make_error(spec.name + ": " + backend.error().message);
  VirtioDevice d;
  d.backend = std::move(*backend);
  d.transport = std::make_unique<virtio_pci::Transport>(d.backend->info(), *d.backend,
                                                         boot::kPciHoleStart + index * virtio_pci::kBarSize);
  d.gsi_base = 24 + static_cast<uint32_t>(index) * virtio_pci::kMaxQueues;
  d.routes.resize(d.transport->num_queues());
  pci_bus_.add(d.transport->config_space());
  virtio_.push_back(std::move(d));
  LOG_INFO("%s: virtio device %u on vhost-user, %u queue(s), BAR at %s", spec.name.c_str(), spec.virtio_id,
           virtio_.back().transport->num_queues(),
           hex(boot::kPciHoleStart + index * virtio_pci::kBarSize).c_str());
  return {};
}

Result<void> Machine::apply_msi_routes() {
  std::vector<KvmVm::MsiRoute> routes;
  for (const auto& d : virtio_) {
    for (size_t q = 0; q < d.routes.size(); q++) {
      if (d.routes[q]) routes.push_back({d.gsi_base + static_cast<uint32_t>(q), d.routes[q]->address, d.routes[q]->data});
    }
  }
  return vm_->set_msi_routes(routes);
}

void Machine::sync_device(size_t index) {
  VirtioDevice& d = virtio_[index];
  if (d.synced == d.transport->generation()) return;
  auto result = [&]() -> Result<void> {
    // Kicks: one ioeventfd per queue on its notify address, wherever the BAR is now.
    auto bar = d.transport->bar();
    if (bar != d.ioevent_bar) {
      uint32_t len = ioeventfd_any_length_ ? 0 : 2;  // Linux notifies with 16-bit writes.
      for (uint16_t q = 0; q < d.transport->num_queues(); q++) {
        uint64_t off = virtio_pci::kNotifyOffset + q * virtio_pci::kNotifyMultiplier;
        if (d.ioevent_bar) MOSS_TRY_VOID(vm_->ioeventfd(d.backend->kick_fd(q), *d.ioevent_bar + off, len, false));
      }
      d.ioevent_bar.reset();
      if (bar) {
        for (uint16_t q = 0; q < d.transport->num_queues(); q++) {
          MOSS_TRY_VOID(vm_->ioeventfd(d.backend->kick_fd(q), *bar + virtio_pci::kNotifyOffset + q * virtio_pci::kNotifyMultiplier, len, true));
        }
        d.ioevent_bar = bar;
      }
    }
    // Interrupts: queue q's call eventfd is an irqfd on its own GSI while the transport gives
    // it an MSI message; the route changes in place. A masked queue's signals stay counted in
    // the eventfd, and KVM delivers them when the irqfd is assigned again.
    std::vector<uint16_t> add, drop;
    bool routes_changed = false;
    for (uint16_t q = 0; q < d.transport->num_queues(); q++) {
      auto want = d.transport->queue_interrupt(q);
      if (want == d.routes[q]) continue;
      if (!want) drop.push_back(q);
      else if (!d.routes[q]) add.push_back(q);
      routes_changed = true;
    }
    for (uint16_t q : drop) MOSS_TRY_VOID(vm_->irqfd(d.backend->call_fd(q), d.gsi_base + q, false));
    for (uint16_t q = 0; q < d.transport->num_queues(); q++) d.routes[q] = d.transport->queue_interrupt(q);
    if (routes_changed) MOSS_TRY_VOID(apply_msi_routes());
    for (uint16_t q : add) MOSS_TRY_VOID(vm_->irqfd(d.backend->call_fd(q), d.gsi_base + q, true));
    return {};
  }();
  d.synced = d.transport->generation();
  if (!result) d.transport->fail("KVM refused an interrupt or notification route: " + result.error().message);
}

Result<void> Machine::load_kernel(const MachineConfig& config) {
  // The kernel and initrd are read straight into guest memory: no second copy in our heap.
  MOSS_TRY(uint64_t kernel_file_size, regular_file_size(config.kernel_fd, "the kernel"));
  MOSS_TRY(auto head, read_file_head(config.kernel_fd, boot::kMaxSetupBytes, "the kernel"));
  MOSS_TRY(auto kernel, boot::parse_bzimage(head, kernel_file_size));
  uint64_t initrd_size = 0;
  if (config.initrd_fd >= 0) {
    MOSS_TRY(initrd_size, regular_file_size(config.initrd_fd, "the initrd"));
  }
  MOSS_TRY(auto plan, boot::plan_boot(kernel, config.mem_bytes, initrd_size, config.cmdline.size()));
  MOSS_TRY(auto kernel_dst, memory_.slice(boot::kKernelGpa, kernel.kernel_size));
  MOSS_TRY_VOID(pread_exact(config.kernel_fd, kernel.kernel_offset, kernel_dst, "the kernel"));
  if (initrd_size) {
    MOSS_TRY(auto initrd_dst, memory_.slice(plan.initrd_gpa, initrd_size));
    MOSS_TRY_VOID(pread_exact(config.initrd_fd, 0, initrd_dst, "the initrd"));
  }
  std::vector<uint8_t> cmdline(config.cmdline.begin(), config.cmdline.end());
  cmdline.push_back(0);
  MOSS_TRY_VOID(memory_.write(boot::kCmdlineGpa, cmdline));
  MOSS_TRY_VOID(memory_.write(boot::kBootParamsGpa, boot::build_boot_params(kernel, plan)));
  MOSS_TRY_VOID(memory_.write(boot::kMpTableGpa, boot::build_mptable(boot::kMpTableGpa, config.cpus)));
  MOSS_TRY_VOID(memory_.write(boot::kAcpiGpa, boot::build_acpi_tables(boot::kAcpiGpa, config.cpus)));
  MOSS_TRY_VOID(x86::write_long_mode_tables(memory_));
  MOSS_TRY_VOID(x86::setup_boot_vcpu(vcpus_[0], plan.entry64, boot::kBootParamsGpa));
  LOG_INFO("loaded %s kernel (%u bytes, protocol %x), initrd %" PRIu64 " bytes at %s, entry %s",
           kernel.is_linux ? "Linux" : "non-Linux", kernel.kernel_size, kernel.protocol, initrd_size,
           hex(plan.initrd_gpa).c_str(), hex(plan.entry64).c_str());
  return {};
}

Machine::~Machine() {
  if (!threads_.empty()) {
    request_stop({MachineExit::Reason::kStopped, 0, "shutting down"});
    join();
  }
  // The VM goes before the memory its slots point at: KVM then never has to invalidate
  // mappings of a live VM while it is being torn down.
  vcpus_.clear();
  vm_.reset();
  if (ram_) munmap(ram_, ram_size_);
}

Result<void> Machine::start(int done_fd) {
  done_fd_ = done_fd;
  struct sigaction sa{};
  sa.sa_handler = kick_handler;  // No SA_RESTART: KVM_RUN must return EINTR.
  sigemptyset(&sa.sa_mask);
  MOSS_TRY_VOID(MOSS_SYS(sigaction(kKickSignal, &sa, nullptr)));
  first_run_ns_ = monotonic_ns();
  // Under exit_mu_: a vCPU that stops the VM at once must not walk threads_ while it grows.
  std::lock_guard<std::mutex> lock(exit_mu_);
  threads_.reserve(vcpus_.size());
  for (size_t i = 0; i < vcpus_.size(); i++) threads_.emplace_back([this, i] { vcpu_loop(i); });
  return {};
}

void Machine::request_stop(MachineExit exit) {
  std::lock_guard<std::mutex> lock(exit_mu_);
  if (stopping_) return;
  stopping_ = true;
  exit_ = std::move(exit);
  stop_flag_.store(true);
  // immediate_exit makes a KVM_RUN that has not started yet return at once; the signal
  // interrupts one that is already running.
  for (auto& v : vcpus_) v.run()->immediate_exit = 1;
  for (auto& t : threads_) {
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) pthread_kill(t.native_handle(), kKickSignal);
  }
  {
    // Parked vCPUs (a paused VM) wait on the condition variable, which no signal wakes.
    std::lock_guard<std::mutex> park_lock(park_mu_);
  }
  park_cv_.notify_all();
  uint64_t one = 1;
  if (done_fd_ >= 0 && write(done_fd_, &one, sizeof one) < 0) LOG_ERROR("cannot signal the end of the VM");
}

MachineExit Machine::join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  std::lock_guard<std::mutex> lock(exit_mu_);
  return exit_;
}

void Machine::console_input(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> lock(uart_mu_);
  uart_->push_input(std::span<const uint8_t>(data, len));
}

void Machine::vcpu_loop(size_t i) {
  KvmVcpu& vcpu = vcpus_[i];
  kvm_run* run = vcpu.run();
  using R = MachineExit::Reason;
  while (!stop_flag_.load()) {
    if (pause_flag_.load()) {
      park(i);
      continue;
    }
    if (ioctl(vcpu.fd(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // A kick; the loop condition decides.
      request_stop({R::kError, 0, errno_message("KVM_RUN failed on vCPU " + std::to_string(i), errno)});
      return;
    }
    if (i == 0 && first_exit_ns_.load() == 0) first_exit_ns_.store(monotonic_ns());
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        handle_pio(run);
        break;
      case KVM_EXIT_MMIO:
        handle_mmio(run);
        break;
      case KVM_EXIT_INTR:
        break;
      case KVM_EXIT_HLT:  // Only without an in-kernel LAPIC; treat a halted CPU as power-off.
        request_stop({R::kPowerOff, 0, "the guest halted"});
        break;
      case KVM_EXIT_SHUTDOWN:
        request_stop({R::kReset, 0, "the guest reset itself (triple fault)"});
        break;
      case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
          request_stop({R::kPowerOff, 0, "the guest powered off"});
        } else if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
          request_stop({R::kReset, 0, "the guest reset itself"});
        } else {
          request_stop({R::kError, 0, "the guest crashed (KVM system event " + std::to_string(run->system_event.type) + ")"});
        }
        break;
      case KVM_EXIT_FAIL_ENTRY:
        request_stop({R::kError, 0, "KVM could not enter the guest on vCPU " + std::to_string(i) + " (hardware reason " +
                                        hex(run->fail_entry.hardware_entry_failure_reason) + ")"});
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        request_stop({R::kError, 0, "KVM internal error on vCPU " + std::to_string(i) + " (suberror " +
                                        std::to_string(run->internal.suberror) +
                                        (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? ": instruction emulation failed)" : ")")});
        break;
      default:
        request_stop({R::kError, 0, "unexpected KVM exit reason " + std::to_string(run->exit_reason) + " on vCPU " + std::to_string(i)});
        break;
    }
  }
}

void Machine::park(size_t i) {
  std::unique_lock<std::mutex> lock(park_mu_);
  parked_++;
  park_cv_.notify_all();
  park_cv_.wait(lock, [&] { return !pause_flag_.load() || stop_flag_.load(); });
  parked_--;
  if (!stop_flag_.load()) vcpus_[i].run()->immediate_exit = 0;
}

Result<void> Machine::pause() {
  if (threads_.empty()) return make_error("the VM is not running");
  {
    std::lock_guard<std::mutex> lock(exit_mu_);
    if (stopping_) return make_error("the VM is ending");
    pause_flag_.store(true);
    // As in request_stop: immediate_exit for a vCPU about to enter KVM_RUN, the signal for
    // one inside it.
    for (auto& v : vcpus_) v.run()->immediate_exit = 1;
    for (auto& t : threads_) pthread_kill(t.native_handle(), kKickSignal);
  }
  std::unique_lock<std::mutex> lock(park_mu_);
  bool all = park_cv_.wait_for(lock, std::chrono::seconds(5),
                               [&] { return parked_ == vcpus_.size() || stop_flag_.load(); });
  if (stop_flag_.load()) return make_error("the VM ended while pausing");
  if (!all) return make_error("a vCPU did not leave KVM_RUN within 5 s");
  return {};
}

void Machine::resume() {
  restart_devices();
  std::lock_guard<std::mutex> lock(park_mu_);
  pause_flag_.store(false);
  park_cv_.notify_all();
}

Result<std::vector<VcpuState>> Machine::save_cpus() {
  if (!pause_flag_.load()) return make_error("the VM must be paused to save its vCPUs");
  std::vector<VcpuState> out;
  for (auto& v : vcpus_) {
    FdKvmIoctl io(v.fd());
    MOSS_TRY(auto s, save_vcpu_state(io, state_caps_, msr_indices_));
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> Machine::restore_cpus(const std::vector<VcpuState>& states) {
  if (!pause_flag_.load()) return make_error("the VM must be paused to restore its vCPUs");
  if (states.size() != vcpus_.size()) {
    return make_error("the saved state has " + std::to_string(states.size()) + " vCPUs, this VM " +
                      std::to_string(vcpus_.size()));
  }
  for (const auto& s : states) MOSS_TRY_VOID(check_vcpu_state_fits(state_caps_, s));
  for (size_t i = 0; i < states.size(); i++) {
    FdKvmIoctl io(vcpus_[i].fd());
    MOSS_TRY_VOID(restore_vcpu_state(io, state_caps_, states[i]));
  }
  return {};
}

Result<VmState> Machine::save_vm() {
  if (!pause_flag_.load()) return make_error("the VM must be paused to save its state");
  FdKvmIoctl io(vm_->fd());
  return save_vm_state(io);
}

std::vector<uint8_t> Machine::save_uart() {
  std::lock_guard<std::mutex> lock(uart_mu_);
  return uart_->state();
}

std::vector<uint8_t> Machine::save_i8042() {
  std::lock_guard<std::mutex> lock(i8042_mu_);
  return i8042_.state();
}

Result<void> Machine::restore_machine(const std::vector<VcpuState>& cpus, const VmState& vm, const UartState& uart,
                                      const I8042State& i8042, bool realtime) {
  if (!pause_flag_.load() && !threads_.empty()) return make_error("the VM must be paused to restore its state");
  std::vector<FdKvmIoctl> ios;
  for (auto& v : vcpus_) ios.emplace_back(v.fd());
  std::vector<KvmIoctl*> ptrs;
  for (auto& io : ios) ptrs.push_back(&io);
  FdKvmIoctl vm_io(vm_->fd());
  MOSS_TRY_VOID(restore_machine_state(ptrs, vm_io, state_caps_, cpus, vm, realtime));
  // Devices last: the UART drives its interrupt line to the restored level, on top of the
  // IOAPIC and PICs restored just before.
  {
    std::lock_guard<std::mutex> lock(uart_mu_);
    uart_->restore(uart);
  }
  std::lock_guard<std::mutex> lock(i8042_mu_);
  i8042_.restore(i8042);
  return {};
}

Result<void> Machine::check_save() {
  std::lock_guard<std::mutex> lock(pci_mu_);
  for (auto& d : virtio_) MOSS_TRY_VOID(d.backend->can_save());
  return {};
}

Result<std::vector<SavedDevice>> Machine::save_devices() {
  if (!pause_flag_.load()) return make_error("the VM must be paused to save its devices");
  std::lock_guard<std::mutex> lock(pci_mu_);
  for (auto& d : virtio_) MOSS_TRY_VOID(d.backend->can_save());
  std::vector<SavedDevice> out;
  for (auto& d : virtio_) {
    virtio_pci::TransportState t = d.transport->state();
    if (t.failed) {
      // Given up on: its backend is not asked (it may be gone); it comes back failed.
      out.push_back({virtio_pci::encode_transport_state(t), {}});
      continue;
    }
    MOSS_TRY(SavedBackend b, d.backend->save());
    for (size_t q = 0; q < t.queues.size(); q++) {
      if (b.bases[q]) {
        t.queues[q].started = true;
        t.queues[q].base = *b.bases[q];
      }
      // A masked queue's interrupt waits in its call eventfd (no irqfd): the PBA records it,
      // and the count goes back for this VM's own resume.
      if (d.routes[q]) continue;
      uint64_t count = 0;
      if (read(d.backend->call_fd(static_cast<uint16_t>(q)), &count, sizeof count) == sizeof count && count) {
        uint16_t v = t.queues[q].queue.vector;
        if (v < t.msix.size()) t.pba[v / 64] |= 1ull << (v % 64);
        if (write(d.backend->call_fd(static_cast<uint16_t>(q)), &count, sizeof count) < 0) {
          return sys_error("signal", "a call eventfd again");
        }
      }
    }
    out.push_back({virtio_pci::encode_transport_state(t), std::move(b.state)});
  }
  return out;
}

void Machine::restart_devices() {
  std::lock_guard<std::mutex> lock(pci_mu_);
  for (size_t i = 0; i < virtio_.size(); i++) {
    auto& d = virtio_[i];
    if (!d.backend->stopped_for_save()) continue;
    auto r = d.backend->restart();
    if (!r) d.transport->fail(config_.devices[i].name + ": restarting its rings after a save failed: " + r.error().message);
    sync_device(i);
  }
}

Result<void> Machine::restore_from(const MachineRestoreData& saved) {
  // Everything is checked before anything changes: the device list, then each transport
  // against its device (the vCPUs' states are checked by restore_machine_state first).
  if (saved.devices.size() != virtio_.size()) {
    return make_error("the saved machine has " + std::to_string(saved.devices.size()) + " devices; this VM has " +
                      std::to_string(virtio_.size()));
  }
  std::vector<virtio_pci::TransportState> transports;
  for (size_t i = 0; i < virtio_.size(); i++) {
    auto t = virtio_pci::decode_transport_state(saved.devices[i].transport, virtio_[i].backend->info());
    if (!t) return make_error(config_.devices[i].name + ": " + t.error().message);
    // A device given up on (failed) comes back failed, without its backend's state.
    const bool running = std::any_of(t->queues.begin(), t->queues.end(), [](auto& q) { return q.started; });
    if (!t->failed && (running || !saved.devices[i].backend.empty())) {
      MOSS_TRY_VOID(virtio_[i].backend->can_save());
    }
    transports.push_back(std::move(*t));
  }
  MOSS_TRY_VOID(restore_machine(saved.cpus, saved.vm, saved.uart, saved.i8042, saved.realtime));
  // Devices last: their interrupts (each running ring's call is signalled once) land in the
  // restored LAPICs, not in ones about to be overwritten.
  std::lock_guard<std::mutex> lock(pci_mu_);
  for (size_t i = 0; i < virtio_.size(); i++) {
    auto& d = virtio_[i];
    const auto& t = transports[i];
    d.transport->restore(t);
    sync_device(i);
    if (d.transport->state().failed && !t.failed) {
      return make_error(config_.devices[i].name + ": KVM refused its restored interrupt or notification routes");
    }
    if (t.failed) continue;
    MOSS_TRY_VOID(d.backend->restore(t.driver_features, t.queues, saved.devices[i].backend));
  }
  return {};
}

void Machine::handle_pio(kvm_run* run) {
  auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  const uint8_t size = run->io.size;
  for (uint32_t n = 0; n < run->io.count; n++, data += size) {
    if (run->io.direction == KVM_EXIT_IO_OUT) {
      uint32_t v = 0;
      std::memcpy(&v, data, size);
      pio_out(run->io.port, size, v);
    } else {
      uint32_t v = pio_in(run->io.port, size);
      std::memcpy(data, &v, size);
    }
  }
}

void Machine::handle_mmio(kvm_run* run) {
  const uint64_t addr = run->mmio.phys_addr;
  const uint32_t len = run->mmio.len;
  {
    std::lock_guard<std::mutex> lock(pci_mu_);
    for (size_t i = 0; i < virtio_.size(); i++) {
      auto& t = *virtio_[i].transport;
      auto bar = t.bar();
      if (!bar || addr < *bar || addr - *bar >= virtio_pci::kBarSize || len > 8) continue;
      uint64_t off = addr - *bar;
      if (run->mmio.is_write) {
        uint64_t v = 0;
        std::memcpy(&v, run->mmio.data, len);
        if (auto q = virtio_pci::Transport::notify_queue(off, t.num_queues())) {
          // A notify the ioeventfd did not catch (an unusual width): kick by hand.
          uint64_t one = 1;
          if (write(virtio_[i].backend->kick_fd(*q), &one, sizeof one) < 0) LOG_ERROR("cannot kick queue %u", *q);
        } else {
          t.write(off, len, v);
        }
      } else {
        uint64_t v = t.read(off, len);
        std::memcpy(run->mmio.data, &v, len);
      }
      sync_device(i);
      return;
    }
  }
  // Unclaimed: reads see an empty bus, writes are dropped.
  if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof run->mmio.data);
  LOG_DEBUG("unclaimed MMIO %s at %s", run->mmio.is_write ? "write" : "read", hex(addr).c_str());
}

uint32_t Machine::pio_in(uint16_t port, uint8_t size) {
  if (port >= pci::kConfigAddressPort && port < pci::kConfigDataPort + 4) {
    std::lock_guard<std::mutex> lock(pci_mu_);
    return pci_bus_.io_read(port, size);
  }
  if (port >= 0x3f8 && port <= 0x3ff) {
    std::lock_guard<std::mutex> lock(uart_mu_);
    return uart_->read(static_cast<uint8_t>(port - 0x3f8));
  }
  switch (port) {
    case I8042::kDataPort: {
      std::lock_guard<std::mutex> lock(i8042_mu_);
      return i8042_.read_data();
    }
    case I8042::kCommandPort: {
      std::lock_guard<std::mutex> lock(i8042_mu_);
      return i8042_.read_status();
    }
    case 0x71:  // CMOS data: the RTC reads as zero; Linux takes wall time from kvm-clock.
      return 0;
    case boot::kAcpiSleepStatusPort:  // WAK_STS clear: the VM never sleeps, so never wakes.
      return 0;
    default:
      return size == 4 ? 0xffffffffu : (1u << (size * 8)) - 1;  // An empty ISA/PCI bus.
  }
}

void Machine::pio_out(uint16_t port, uint8_t size, uint32_t value) {
  using R = MachineExit::Reason;
  if (port >= pci::kConfigAddressPort && port < pci::kConfigDataPort + 4) {
    std::lock_guard<std::mutex> lock(pci_mu_);
    pci_bus_.io_write(port, size, value);
    if (port >= pci::kConfigDataPort) {
      // A config write may move a BAR or switch MSI-X: let every transport look.
      for (size_t i = 0; i < virtio_.size(); i++) {
        virtio_[i].transport->config_written();
        sync_device(i);
      }
    }
    return;
  }
  if (port >= 0x3f8 && port <= 0x3ff) {
    std::lock_guard<std::mutex> lock(uart_mu_);
    uart_->write(static_cast<uint8_t>(port - 0x3f8), static_cast<uint8_t>(value));
    return;
  }
  switch (port) {
    case kExitPort:
      request_stop({R::kGuestStatus, static_cast<int32_t>(value), "the guest reported status " + std::to_string(value)});
      return;
    case I8042::kDataPort: {
      std::lock_guard<std::mutex> lock(i8042_mu_);
      i8042_.write_data(static_cast<uint8_t>(value));
      return;
    }
    case I8042::kCommandPort: {
      bool reset;
      {
        std::lock_guard<std::mutex> lock(i8042_mu_);
        reset = i8042_.write_command(static_cast<uint8_t>(value));
      }
      if (reset) request_stop({R::kReset, 0, "the guest reset itself (i8042)"});  // Linux reboot=k.
      return;
    }
    case boot::kAcpiSleepControlPort:  // ACPI (hardware-reduced) sleep control: S5 is power-off.
      if (boot::decode_sleep_control_write(static_cast<uint8_t>(value))) {
        request_stop({R::kPowerOff, 0, "the guest powered off (ACPI S5)"});
      }
      return;
    case 0x92:  // System control port A, bit 0: fast reset.
      if (value & 1) request_stop({R::kReset, 0, "the guest reset itself (port 0x92)"});
      return;
    default:
      (void)size;
      return;  // Port 0x80 (POST delay), the CMOS index 0x70, and everything unclaimed.
  }
}

}  // namespace moss
