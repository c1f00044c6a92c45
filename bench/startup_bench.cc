// Start-up benchmark: moss beside QEMU+KVM, same kernel, same initramfs, same host, same run.
//
// Rows (each the median of N runs):
//   first-instruction: exec of the VMM -> the guest's first instruction. The guest is
//     tests/guests/firstinsn.bzImage, whose first instruction ends the VM. For moss the
//     instant comes from the vcpu process (CLOCK_MONOTONIC at the boot vCPU's first exit);
//     for QEMU only the process end is observable (its first instruction is an isa-debug-exit
//     write), so both also get "exec -> VMM exit". CPU ms = user+sys of the VMM and all its
//     children over the whole run.
//   boot-to-init: exec -> "moss-init: ready" on the console, Debian's kernel + moss's
//     initramfs, 1 vCPU, 512 MiB, no command (the console is on stdout), then stopped.
//   `moss run -- true` end to end, split by the broker's --stats instants: VMM start (exec ->
//     the boot vCPU's first KVM_RUN), guest boot (-> moss-init's agent dials in), exec (-> the
//     exit status is back), shutdown (-> moss has exited).
//   peak RSS: per process (moss broker, moss vcpu; qemu) during a Linux boot.
//
// Usage: startup_bench --build DIR --kernel K --initrd I --out FILE [--runs N] [--where TEXT]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "broker/defaults.h"
#include "guest/moss-init/cmdline.h"

namespace {

using moss::bench::fmt;
using moss::bench::median;
using moss::bench::now_ms;
using moss::bench::ratio;
using moss::bench::read_stats;


struct Run {
  int status = -1;
  double start_ms = 0;
  double exit_ms = 0;     // exec -> process end.
  double marker_ms = -1;  // exec -> marker on stdout, or -1.
  double cpu_ms = 0;
  long maxrss_kib = 0;    // Largest single process among the VMM and its reaped children.
  std::string out;
};

// Runs argv with stdout captured; notes when `marker` first appears, and kills the process
// then with signal `kill_at_marker` if nonzero.
Run run(const std::vector<std::string>& argv, const std::string& marker, int kill_at_marker = 0,
        int timeout_s = 300) {
  Run r;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) std::abort();
  r.start_ms = now_ms();
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(p[1], 1);
    dup2(devnull, 2);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(p[1]);
  char buf[65536];
  for (;;) {
    pollfd pf{p[0], POLLIN, 0};
    int n = poll(&pf, 1, 1000);
    if (now_ms() - r.start_ms > timeout_s * 1000.0) {
      kill(pid, SIGKILL);
      break;
    }
    if (n <= 0) continue;
    ssize_t got = read(p[0], buf, sizeof buf);
    if (got <= 0) break;
    r.out.append(buf, static_cast<size_t>(got));
    if (r.marker_ms < 0 && !marker.empty() && r.out.find(marker) != std::string::npos) {
      r.marker_ms = now_ms() - r.start_ms;
      if (kill_at_marker) kill(pid, kill_at_marker);
    }
  }
  close(p[0]);
  int status;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  r.exit_ms = now_ms() - r.start_ms;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  r.maxrss_kib = ru.ru_maxrss;
  return r;
}





[[noreturn]] void fail(const std::string& why, const Run& r) {
  std::fprintf(stderr, "startup_bench: %s (status %d)\n--- output:\n%s\n", why.c_str(), r.status, r.out.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  std::string build, kernel, initrd, out, where = "this host";
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--build") build = v;
    else if (k == "--kernel") kernel = v;
    else if (k == "--initrd") initrd = v;
    else if (k == "--out") out = v;
    else if (k == "--runs") runs = std::atoi(v.c_str());
    else if (k == "--where") where = v;
  }
  if (build.empty() || kernel.empty() || initrd.empty() || out.empty() || runs < 1) {
    std::fprintf(stderr, "usage: startup_bench --build DIR --kernel K --initrd I --out FILE [--runs N] [--where TEXT]\n");
    return 2;
  }
  const std::string moss = build + "/moss";
  const std::string firstinsn = build + "/tests/guests/firstinsn.bzImage";
  const std::string stats = "/tmp/moss-bench-stats.json";
  // The same kernel command line for both VMMs: moss's base line (moss-init, no command).
  const std::string cmdline = moss::kBaseCmdline;
  const std::vector<std::string> qemu_base = {"qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-M",
                                              "microvm", "-nodefaults", "-no-user-config", "-nographic",
                                              "-no-reboot", "-smp", "1"};

  std::vector<double> m_first, m_exit, m_cpu, q_exit, q_cpu;
  for (int i = 0; i < runs; i++) {
    Run r = run({moss, "run", "--kernel", firstinsn, "--initrd", "none", "--mem", "64M", "--stats", stats}, "");
    if (r.status != 0) fail("moss did not run the first-instruction guest", r);
    auto s = read_stats(stats);
    // Both clocks are CLOCK_MONOTONIC on the same host.
    m_first.push_back(s["first_exit_ns"] / 1e6 - r.start_ms);
    m_exit.push_back(r.exit_ms);
    m_cpu.push_back(r.cpu_ms);
    auto q = qemu_base;
    for (const char* a : {"-m", "64M", "-kernel"}) q.push_back(a);
    q.push_back(firstinsn);
    for (const char* a : {"-device", "isa-debug-exit,iobase=0xf4,iosize=1"}) q.push_back(a);
    Run qr = run(q, "");
    if (qr.status != 1) fail("QEMU did not run the first-instruction guest (isa-debug-exit status 1 expected)", qr);
    q_exit.push_back(qr.exit_ms);
    q_cpu.push_back(qr.cpu_ms);
  }

  std::vector<double> m_boot, q_boot, m_broker_rss, m_vcpu_rss, q_rss;
  std::vector<double> e_total, e_vmm, e_boot, e_exec, e_down;
  for (int i = 0; i < runs; i++) {
    // Boot to the marker with the console on stdout, then an orderly stop (SIGTERM).
    Run r = run({moss, "run", "--kernel", kernel, "--initrd", initrd}, std::string(moss::guest::kReadyMarker), SIGTERM);
    if (r.marker_ms < 0) fail("moss did not boot Linux to moss-init", r);
    m_boot.push_back(r.marker_ms);
    // The main job, end to end.
    Run e = run({moss, "run", "--kernel", kernel, "--initrd", initrd, "--stats", stats, "--", "true"}, "");
    if (e.status != 0) fail("moss run -- true failed", e);
    auto s = read_stats(stats);
    if (s["agent_connected_ns"] <= 0 || s["command_exited_ns"] <= 0) fail("moss run -- true left no agent instants", e);
    e_total.push_back(e.exit_ms);
    // Linux runs a while before its first exit, so the guest starts at the first KVM_RUN here.
    e_vmm.push_back(s["first_run_ns"] / 1e6 - e.start_ms);
    e_boot.push_back((s["agent_connected_ns"] - s["first_run_ns"]) / 1e6);
    e_exec.push_back((s["command_exited_ns"] - s["agent_connected_ns"]) / 1e6);
    e_down.push_back(e.start_ms + e.exit_ms - s["command_exited_ns"] / 1e6);
    m_broker_rss.push_back(s["broker_maxrss_kib"] / 1024);
    m_vcpu_rss.push_back(s["vcpu_maxrss_kib"] / 1024);
    auto q = qemu_base;
    for (const char* a : {"-m", "512M", "-serial", "stdio", "-kernel"}) q.push_back(a);
    q.push_back(kernel);
    q.push_back("-initrd");
    q.push_back(initrd);
    q.push_back("-append");
    q.push_back(cmdline);
    Run qr = run(q, std::string(moss::guest::kReadyMarker), SIGKILL);
    if (qr.marker_ms < 0) fail("QEMU did not boot Linux to moss-init", qr);
    q_boot.push_back(qr.marker_ms);
    q_rss.push_back(qr.maxrss_kib / 1024.0);
  }

  std::ofstream f(out + ".tmp");
  f << "# moss start-up beside QEMU+KVM\n\n"
    << "Measured " << where << ", " << runs << " runs each, medians. QEMU: `qemu-system-x86_64 -accel kvm -cpu host "
    << "-M microvm`, same guest images. Lower is better; ratio = moss / QEMU.\n\n"
    << "| figure | moss | QEMU | ratio |\n|---|---|---|---|\n"
    << "| exec -> guest's first instruction, wall | " << fmt(median(m_first), "ms") << " | n/a (not observable) | n/a |\n"
    << "| exec -> VMM exit, first-instruction guest, wall | " << fmt(median(m_exit), "ms") << " | "
    << fmt(median(q_exit), "ms") << " | " << ratio(median(m_exit), median(q_exit)) << " |\n"
    << "| CPU time, first-instruction guest (all processes) | " << fmt(median(m_cpu), "ms") << " | "
    << fmt(median(q_cpu), "ms") << " | " << ratio(median(m_cpu), median(q_cpu)) << " |\n"
    << "| exec -> `moss-init: ready`, Linux 1 vCPU 512 MiB, wall | " << fmt(median(m_boot), "ms") << " | "
    << fmt(median(q_boot), "ms") << " | " << ratio(median(m_boot), median(q_boot)) << " |\n"
    << "| `moss run -- true`, exec -> moss exit, wall | " << fmt(median(e_total), "ms") << " | - | - |\n"
    << "| ... VMM start: exec -> the first KVM_RUN | " << fmt(median(e_vmm), "ms") << " | - | - |\n"
    << "| ... guest boot: first KVM_RUN -> agent connected | " << fmt(median(e_boot), "ms") << " | - | - |\n"
    << "| ... exec: agent connected -> exit status back | " << fmt(median(e_exec), "ms") << " | - | - |\n"
    << "| ... shutdown: exit status -> moss exit | " << fmt(median(e_down), "ms") << " | - | - |\n"
    << "| peak RSS, broker process (Linux boot) | " << fmt(median(m_broker_rss), "MiB") << " | - | - |\n"
    << "| peak RSS, vcpu process (Linux boot) | " << fmt(median(m_vcpu_rss), "MiB") << " | "
    << fmt(median(q_rss), "MiB") << " (qemu) | " << ratio(median(m_vcpu_rss), median(q_rss)) << " |\n"
    << "| peak RSS, all VMM processes (Linux boot) | " << fmt(median(m_broker_rss) + median(m_vcpu_rss), "MiB")
    << " | " << fmt(median(q_rss), "MiB") << " | " << ratio(median(m_broker_rss) + median(m_vcpu_rss), median(q_rss))
    << " |\n";
  f.close();
  std::rename((out + ".tmp").c_str(), out.c_str());
  std::ifstream back(out);
  std::fputs(std::string((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>()).c_str(), stdout);
  return 0;
}
