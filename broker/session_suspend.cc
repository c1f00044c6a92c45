// moss suspend, the running broker's side (broker/session.h Session::suspend).
//
// The order, each step only once the previous one answered, from the loop:
//   1. checkSave: the vcpu process says whether every device's backend can save its state
//      (vhost-user DEVICE_STATE); a refusal fails the suspend with its sentence, before
//      anything is paused or written.
//   2. pause, then saveMachineState (vCPUs, the VM's irqchip/PIT/clock, UART, i8042, and each
//      device's transport and backend state, its rings stopped).
//   3. The spore is written on a thread of its own: each device's record (a disk's size and
//      identity), the manifest (broker/spore_manifest.h), guest RAM read from the memfd
//      mapped read-only, all through store::write_spore (crash-safe: a spore exists only
//      once it is whole). The loop meanwhile keeps serving the vcpu process, the workers,
//      signals and the control socket (stats say "suspending"): a many-GiB write does not
//      starve it. The guest is paused for the whole write either way (its RAM must not
//      change under it).
//   4. The VM is stopped (the broker then exits 0, saying where the spore is), or resumed
//      with --keep-running. Any failure: one sentence to the client and the VM resumed.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "base/log.h"
#include "broker/session.h"
#include "broker/spore_manifest.h"
#include "store/spore.h"

namespace moss {


namespace {

std::string host_arch() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  return u.machine;
}

// Tests: MOSS_TEST_SUSPEND_HOLD=STEP makes the writer stop after STEP ("records", "chunks",
// "root") until the file SPORE.hold, which it creates, is removed (at most 60 s), so that a
// test can kill a process of the VM in the middle of a suspend.
void hold_for_test(const std::string& spore, const char* step) {
  const char* want = std::getenv("MOSS_TEST_SUSPEND_HOLD");
  if (want == nullptr || std::string(want) != step) return;
  std::string marker = spore + ".hold";
  FILE* f = std::fopen(marker.c_str(), "w");
  if (f) std::fclose(f);
  for (int i = 0; i < 600 && access(marker.c_str(), F_OK) == 0; i++) usleep(100 * 1000);
}

// Everything the writer thread needs, copied on the loop's thread.
struct WriterInput {
  control::SuspendArgs args;
  std::unique_ptr<capnp::MallocMessageBuilder> state;
  sporemf::MachineFacts facts;
  std::vector<sporemf::DeviceSource> devices;
  UniqueFd ram;
};

Result<store::SporeWritten> write(WriterInput in) {
  MOSS_TRY(in.facts.devices, sporemf::take_records(in.devices));
  hold_for_test(in.args.spore, "records");
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<spore::Manifest>();
  MOSS_TRY_VOID(sporemf::build(root, in.state->getRoot<ipc::MachineState>().asReader(), in.facts));
  const uint64_t bytes = in.facts.mem_bytes;
  void* map = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, in.ram.get(), 0);
  if (map == MAP_FAILED) return sys_error("map guest RAM to read it");
  struct Unmap {
    void* p;
    uint64_t n;
    ~Unmap() { munmap(p, n); }
  } unmap{map, bytes};
  std::vector<store::RamRegion> regions;
  for (const auto& r : sporemf::ram_ranges(bytes)) {
    regions.push_back({r.guest_addr, {static_cast<const uint8_t*>(map) + r.file_offset, r.bytes}});
  }
  MOSS_TRY(auto store, store::ChunkStore::open(in.args.store));
  store::WriteOptions options;
  const std::string spore = in.args.spore;
  options.after_step = [spore](const char* step) { hold_for_test(spore, step); };
  return store::write_spore(store, in.args.spore, message, regions, options);
}

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

Session::~Session() {
  if (suspend_ && suspend_->writer.joinable()) suspend_->writer.join();
}

void Session::suspend(const control::SuspendArgs& args, SuspendDone done) {
  if (suspend_) return done(make_error("a suspend of this VM is under way"));
  if (vm_ending()) return done(make_error("the VM is stopping"));
  if (!ram_) return done(make_error("this VM's RAM is not the broker's to read"));
  suspend_ = std::make_unique<SuspendJob>();
  suspend_->args = args;
  suspend_->done = std::move(done);
  suspend_->user_paused = vcpu_.paused();
  LOG_INFO("suspending the VM to %s", args.spore.c_str());
  vcpu_.check_save([this](const Result<void>& ok) {
    if (!ok) return suspend_failed(ok.error(), /*paused=*/false);
    if (vm_ending()) return suspend_failed(Error{"the VM is stopping"}, false);
    auto save = [this] {
      vcpu_.save_machine([this](Result<std::unique_ptr<capnp::MallocMessageBuilder>> state) {
        if (!state) return suspend_failed(state.error(), true);
        start_spore_writer(std::move(*state));
      });
    };
    if (suspend_->user_paused) return save();
    vcpu_.set_paused(true, [this, save](const Result<void>& paused) {
      if (!paused) return suspend_failed(paused.error(), false);
      save();
    });
  });
}

void Session::suspend_failed(const Error& error, bool paused) {
  MOSS_ASSERT(suspend_);
  std::unique_ptr<SuspendJob> job = std::move(suspend_);
  LOG_WARN("the suspend failed: %s", error.message.c_str());
  if (paused && !vm_ending() && !job->user_paused) {
    // The VM runs on as before: the client hears why once it does.
    auto shared = std::shared_ptr<SuspendJob>(std::move(job));
    vcpu_.set_paused(false, [shared, error, this](const Result<void>& resumed) {
      if (!resumed) {
        // A VM that cannot run on is stopped: never left paused for good.
        stop_vm();
        shared->answer(make_error(error.message + "; the VM could not be resumed (" + resumed.error().message +
                                  ") and was stopped"));
        return;
      }
      shared->answer(error);
    });
    return;
  }
  job->answer(error);
}

void Session::start_spore_writer(std::unique_ptr<capnp::MallocMessageBuilder> state) {
  WriterInput in;
  in.args = suspend_->args;
  in.state = std::move(state);
  in.facts.arch = host_arch();
  in.facts.kvm_caps = sporemf::required_kvm_caps();
  in.facts.mem_bytes = options_.mem_bytes;
  in.facts.cpus = options_.cpus;
  in.facts.cmdline = spore_.cmdline;
  in.facts.generation = spore_.generation;
  in.facts.vsock_cid = vsock_ ? vsock_->cid() : 0;
  in.facts.name = options_.name;
  in.devices = spore_.devices;
  int ram = fcntl(ram_.get(), F_DUPFD_CLOEXEC, 3);
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ram < 0 || wake < 0) {
    if (ram >= 0) close(ram);
    if (wake >= 0) close(wake);
    return suspend_failed(Error{"cannot start writing the spore: out of file descriptors"}, true);
  }
  in.ram.reset(ram);
  suspend_->wake.reset(wake);
  suspend_->woken = Event::on_fd(loop_.get(), wake, EV_READ, [this](int, short) { spore_written(); });
  suspend_->woken.add();
  SuspendJob* job = suspend_.get();
  job->writer = std::thread([job, in = std::move(in)]() mutable {
    job->written = write(std::move(in));
    uint64_t one = 1;
    (void)!::write(job->wake.get(), &one, sizeof one);
  });
}

void Session::spore_written() {
  MOSS_ASSERT(suspend_);
  suspend_->writer.join();
  suspend_->woken.reset();
  if (!suspend_->written) return suspend_failed(suspend_->written.error(), true);
  const auto& w = *suspend_->written;
  std::string sentence = "the VM is in the spore " + suspend_->args.spore + " (" + std::to_string(w.chunks) + " chunks of " +
                         mib(options_.mem_bytes) + " RAM, " + std::to_string(w.zero_chunks) + " zero, " +
                         std::to_string(w.new_chunks) + " new in the store, " + mib(w.new_bytes) + ")";
  std::unique_ptr<SuspendJob> job = std::move(suspend_);
  if (job->args.keep_running && job->user_paused) {
    // Its rings start again with the vCPUs, at moss resume.
    job->answer(sentence + "; the VM stays paused (moss resume lets it run)");
    return;
  }
  if (job->args.keep_running) {
    auto shared = std::shared_ptr<SuspendJob>(std::move(job));
    vcpu_.set_paused(false, [this, shared, sentence](const Result<void>& resumed) {
      if (!resumed) {
        stop_vm();
        shared->answer(sentence + "; the VM could not be resumed (" + resumed.error().message + ") and was stopped");
        return;
      }
      shared->answer(sentence + "; the VM runs on");
    });
    return;
  }
  suspended_to_ = job->args.spore;
  job->answer(sentence + "; the VM is stopping");
  stop_vm();
}

void Session::finish_suspend_after_loop() {
  if (!suspend_) return;
  if (suspend_->writer.joinable()) suspend_->writer.join();
  std::unique_ptr<SuspendJob> job = std::move(suspend_);
  if (!job->written) {
    job->answer(make_error(job->written.error().message + "; the VM ended meanwhile"));
    return;
  }
  // The state was taken while the VM was whole: the spore is good, though the VM is gone.
  job->answer("the VM is in the spore " + job->args.spore + "; the VM ended meanwhile");
}

}  // namespace moss
