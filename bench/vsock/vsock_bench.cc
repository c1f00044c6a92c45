// virtio-vsock bench (issue 5, acceptance 7, the worker half), driven by the host-side driver
// harness (tests/harness): moss-vsock as its own process, our vsock driver as the guest
// (receive buffers of 4 KiB as Linux posts them, transmit packets of up to 64 KiB as Linux
// sends them, 256 KiB of credit each way as Linux grants), and a host program on a Unix
// socket. Measured:
//   - round trip of a 1-byte message, both ways round: host program -> guest -> host program
//     (a host-initiated connection; the guest echoes) and guest -> host program -> guest (a
//     guest-initiated one; the host program echoes). Clock: steady_clock around the
//     originator's write of the byte and its read of the echo, one sample per round trip;
//   - stream throughput host -> guest and guest -> host: --mib MiB in 64 KiB writes, from the
//     first write to the last byte read at the other end, best of --reps runs; the worker's CPU
//     time (utime + stime, /proc) per GiB moved, and the harness's own (the "guest" and the
//     host program) beside it;
//   - the floor: the same over a Unix socketpair between two threads, no worker and no
//     virtqueue.
// No figure is asserted: bench/vsock/run-vsock-bench.sh only checks that every row was measured.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/guest.h"
#include "tests/harness/vsock_driver.h"
#include "tests/harness/vsock_process.h"

namespace moss::bench {
namespace {

using harness::Guest;
using harness::VsockDriver;
using harness::VsockProcess;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kCid = 3;
constexpr uint32_t kGuestPort = 52;
constexpr uint32_t kHostPort = 5000;
constexpr size_t kChunk = 64 * 1024;

struct Options {
  std::string out;
  std::string where = "directly on this host (no VM: the harness is the guest)";
  int iterations = 20000;
  int warmup = 2000;
  int mib = 256;
  int reps = 3;
};

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

bool write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vsock_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T must(Result<T> r, const char* what) {
  if (!r.ok()) die(std::string(what) + ": " + r.error().message);
  return std::move(r).value();
}
void must(Result<void> r, const char* what) {
  if (!r.ok()) die(std::string(what) + ": " + r.error().message);
}

struct Latency {
  double median_us = 0, p99_us = 0, mean_us = 0, per_second = 0;
};

Latency summarize(std::vector<double> us) {
  Latency l;
  if (us.empty()) return l;
  std::sort(us.begin(), us.end());
  l.median_us = us[us.size() / 2];
  l.p99_us = us[std::min(us.size() - 1, static_cast<size_t>(us.size() * 0.99))];
  double sum = 0;
  for (double v : us) sum += v;
  l.mean_us = sum / static_cast<double>(us.size());
  l.per_second = 1e6 / l.mean_us;
  return l;
}

struct Throughput {
  double mb_per_s = 0;
  double worker_cpu_per_gib = -1;   // -1: no worker.
  double harness_cpu_per_gib = 0;
};

// One moss-vsock and one connected "guest".
struct Rig {
  std::unique_ptr<VsockProcess> worker;
  std::unique_ptr<Guest> guest;
  std::unique_ptr<VsockDriver> driver;
  UniqueFd listener;

  Rig() {
    harness::VsockProcessOptions o;
    o.guest_cid = kCid;
    worker = must(VsockProcess::start(o), "starting moss-vsock");
    guest = must(Guest::connect(worker->socket_path(), VsockDriver::guest_options(128, 64ull << 20)), "connecting the guest");
    harness::VsockDriverOptions d;
    d.guest_cid = kCid;
    d.timeout = std::chrono::seconds(10);
    driver = must(VsockDriver::create(*guest, d), "starting the vsock driver");
    listener = must(harness::host_listen(worker->uds_path(), kHostPort), "listening for the guest");
  }
  // A host program connected to the guest's port (the host side, the guest's stream).
  std::pair<UniqueFd, vsock::ConnKey> host_initiated() {
    UniqueFd host = must(harness::host_connect(worker->uds_path(), kGuestPort, std::chrono::seconds(10)), "CONNECT");
    vsock::ConnKey key = must(driver->accept(kGuestPort), "accepting in the guest");
    std::string ok = must(harness::read_line(host.get()), "reading OK");
    if (ok.rfind("OK ", 0) != 0) die("the worker answered '" + ok + "'");
    return {std::move(host), key};
  }
  std::pair<UniqueFd, vsock::ConnKey> guest_initiated(uint32_t guest_port) {
    vsock::ConnKey key = must(driver->connect(kHostPort, guest_port), "connecting from the guest");
    UniqueFd host = must(harness::host_accept(listener.get(), std::chrono::seconds(10)), "accepting on the host");
    timeval tv{10, 0};
    ::setsockopt(host.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return {std::move(host), key};
  }
};

// Host program -> guest -> host program.
Latency latency_host_first(Rig& rig, const Options& o) {
  auto [host, key] = rig.host_initiated();
  std::vector<double> samples;
  std::thread h([&, fd = host.get()] {
    uint8_t b = 'x';
    for (int i = 0; i < o.warmup + o.iterations; i++) {
      auto t0 = Clock::now();
      if (!write_all(fd, &b, 1) || !read_all(fd, &b, 1)) die("the host program lost its connection");
      if (i >= o.warmup) samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
  });
  for (int i = 0; i < o.warmup + o.iterations; i++) {
    auto b = must(rig.driver->read(key, 1), "guest read");
    if (b.size() != 1) die("the guest read EOF");
    must(rig.driver->write(key, b), "guest write");
  }
  h.join();
  must(rig.driver->reset(key), "closing");
  return summarize(std::move(samples));
}

// Guest -> host program -> guest.
Latency latency_guest_first(Rig& rig, const Options& o) {
  auto [host, key] = rig.guest_initiated(1025);
  std::thread h([&, fd = host.get()] {
    uint8_t b;
    for (int i = 0; i < o.warmup + o.iterations; i++) {
      if (!read_all(fd, &b, 1) || !write_all(fd, &b, 1)) die("the host program lost its connection");
    }
  });
  std::vector<double> samples;
  const uint8_t x = 'x';
  for (int i = 0; i < o.warmup + o.iterations; i++) {
    auto t0 = Clock::now();
    must(rig.driver->write(key, std::span(&x, 1)), "guest write");
    auto b = must(rig.driver->read(key, 1), "guest read");
    if (b.size() != 1) die("the guest read EOF");
    if (i >= o.warmup) samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  h.join();
  must(rig.driver->reset(key), "closing");
  return summarize(std::move(samples));
}

Latency latency_socketpair(const Options& o) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  UniqueFd a(sv[0]), b(sv[1]);
  std::thread echo([&] {
    uint8_t c;
    for (int i = 0; i < o.warmup + o.iterations; i++) {
      if (!read_all(b.get(), &c, 1) || !write_all(b.get(), &c, 1)) die("socketpair echo");
    }
  });
  std::vector<double> samples;
  uint8_t c = 'x';
  for (int i = 0; i < o.warmup + o.iterations; i++) {
    auto t0 = Clock::now();
    if (!write_all(a.get(), &c, 1) || !read_all(a.get(), &c, 1)) die("socketpair");
    if (i >= o.warmup) samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  echo.join();
  return summarize(std::move(samples));
}

struct Timed {
  double seconds;
  double worker_cpu;
  double harness_cpu;
};

Throughput best_of(const Options& o, pid_t worker, const std::function<Timed()>& run) {
  Throughput best;
  const double bytes = static_cast<double>(o.mib) * (1 << 20);
  for (int r = 0; r < o.reps; r++) {
    Timed t = run();
    double mbs = bytes / t.seconds / 1e6;
    if (mbs > best.mb_per_s) {
      best.mb_per_s = mbs;
      const double gib = bytes / (1ull << 30);
      best.worker_cpu_per_gib = worker > 0 ? t.worker_cpu / gib : -1;
      best.harness_cpu_per_gib = t.harness_cpu / gib;
    }
  }
  return best;
}

Throughput stream_to_guest(Rig& rig, const Options& o) {
  const size_t total = static_cast<size_t>(o.mib) << 20;
  return best_of(o, rig.worker->pid(), [&] {
    auto [host, key] = rig.host_initiated();
    std::vector<uint8_t> chunk(kChunk, 0x5a);
    double w0 = *harness::process_cpu_seconds(rig.worker->pid()), h0 = self_cpu_seconds();
    auto t0 = Clock::now();
    std::thread writer([&, fd = host.get()] {
      for (size_t sent = 0; sent < total; sent += kChunk) {
        if (!write_all(fd, chunk.data(), std::min(kChunk, total - sent))) die("the host program lost its connection");
      }
    });
    for (size_t got = 0; got < total;) {
      auto b = must(rig.driver->read(key, kChunk), "guest read");
      if (b.empty()) die("EOF in the guest");
      got += b.size();
    }
    auto t1 = Clock::now();
    writer.join();
    Timed t{std::chrono::duration<double>(t1 - t0).count(), *harness::process_cpu_seconds(rig.worker->pid()) - w0,
            self_cpu_seconds() - h0};
    must(rig.driver->reset(key), "closing");
    return t;
  });
}

Throughput stream_to_host(Rig& rig, const Options& o) {
  const size_t total = static_cast<size_t>(o.mib) << 20;
  static uint32_t next_port = 2000;
  return best_of(o, rig.worker->pid(), [&] {
    auto [host, key] = rig.guest_initiated(next_port++);
    std::vector<uint8_t> chunk(kChunk, 0xa5);
    std::atomic<bool> done{false};
    Clock::time_point t1;
    double w0 = *harness::process_cpu_seconds(rig.worker->pid()), h0 = self_cpu_seconds();
    auto t0 = Clock::now();
    std::thread reader([&, fd = host.get()] {
      std::vector<uint8_t> buf(kChunk);
      for (size_t got = 0; got < total;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n <= 0) die("the host program lost its connection");
        got += static_cast<size_t>(n);
      }
      t1 = Clock::now();
      done = true;
    });
    for (size_t sent = 0; sent < total; sent += kChunk) {
      must(rig.driver->write(key, std::span(chunk).first(std::min(kChunk, total - sent))), "guest write");
    }
    // Keep taking credit updates and returned buffers until the host has everything.
    while (!done) (void)rig.driver->pump(Clock::now() + std::chrono::milliseconds(5));
    reader.join();
    Timed t{std::chrono::duration<double>(t1 - t0).count(), *harness::process_cpu_seconds(rig.worker->pid()) - w0,
            self_cpu_seconds() - h0};
    must(rig.driver->reset(key), "closing");
    return t;
  });
}

Throughput stream_socketpair(const Options& o) {
  const size_t total = static_cast<size_t>(o.mib) << 20;
  return best_of(o, 0, [&] {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    UniqueFd a(sv[0]), b(sv[1]);
    std::vector<uint8_t> chunk(kChunk, 1), buf(kChunk);
    double h0 = self_cpu_seconds();
    auto t0 = Clock::now();
    std::thread writer([&] {
      for (size_t sent = 0; sent < total; sent += kChunk) write_all(a.get(), chunk.data(), std::min(kChunk, total - sent));
    });
    for (size_t got = 0; got < total;) {
      ssize_t n = ::read(b.get(), buf.data(), buf.size());
      if (n <= 0) die("socketpair");
      got += static_cast<size_t>(n);
    }
    auto t1 = Clock::now();
    writer.join();
    return Timed{std::chrono::duration<double>(t1 - t0).count(), 0, self_cpu_seconds() - h0};
  });
}

std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

std::string host_facts() {
  utsname u{};
  ::uname(&u);
  std::string model;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return std::string("Linux ") + u.release + ", " + std::to_string(std::thread::hardware_concurrency()) + " CPUs (" + model + ")";
}

std::string today() {
  std::time_t t = std::time(nullptr);
  char b[16];
  std::strftime(b, sizeof b, "%Y-%m-%d", std::localtime(&t));
  return b;
}

int run(const Options& o) {
  std::fprintf(stderr, "vsock_bench: round trips (%d each)...\n", o.iterations);
  Rig rig;
  Latency host_first = latency_host_first(rig, o);
  Latency guest_first = latency_guest_first(rig, o);
  Latency pair = latency_socketpair(o);
  std::fprintf(stderr, "vsock_bench: streams (%d MiB, best of %d)...\n", o.mib, o.reps);
  Throughput to_guest = stream_to_guest(rig, o);
  Throughput to_host = stream_to_host(rig, o);
  Throughput pair_stream = stream_socketpair(o);
  const uint64_t violations = rig.driver->credit_violations();
  const uint64_t device_errors = rig.driver->malformed_from_device();

  std::ostringstream f;
  f << "# virtio-vsock: moss-vsock through the driver harness\n\n";
  f << "Measured " << today() << " " << o.where << ", on " << host_facts()
    << ". Generated by `bench/vsock/vsock_bench.cc` (CTest `bench_vsock`).\n\n";
  f << "- Guest: the host-side harness (`tests/harness`): a sealed memfd as guest RAM, our split virtqueues with "
       "EVENT_IDX, queues of 128, and `VsockDriver` laid out as Linux 6.1's driver: 64 receive buffers of 44 + 4096 "
       "bytes, transmit packets of a header and up to 64 KiB, 256 KiB of credit granted per stream, a CREDIT_UPDATE "
       "after each quarter consumed.\n";
  f << "- Host program: a thread on a Unix stream socket, blocking I/O: `CONNECT 52` on the worker's socket for "
       "host-initiated streams, a listener on `<uds>_5000` for guest-initiated ones.\n";
  f << "- Round trip: " << o.iterations << " one-byte messages after " << o.warmup
    << " warm-up ones; the clock runs from the originator's write of the byte to its read of the echo "
       "(steady_clock), both sides waiting in blocking calls (the guest on its receive interrupt, an eventfd).\n";
  f << "- Streams: " << o.mib << " MiB in 64 KiB writes, from the first write to the last byte read at the other end, "
    << "best of " << o.reps << "; MB/s is 10^6 bytes per second. CPU: utime + stime of the moss-vsock process "
       "(/proc/PID/stat) and of the harness process (the guest driver and the host program together), per GiB moved.\n";
  f << "- The floor: the same over a Unix socketpair between two threads: no worker, no virtqueue, no second copy.\n\n";

  f << "## Round trip of a 1-byte message\n\n";
  f << "| path | median (µs) | p99 (µs) | mean (µs) | round trips/s |\n|---|---|---|---|---|\n";
  auto lat = [&](const char* name, const Latency& l) {
    f << "| " << name << " | " << fixed(l.median_us, 1) << " | " << fixed(l.p99_us, 1) << " | " << fixed(l.mean_us, 1)
      << " | " << fixed(l.per_second, 0) << " |\n";
  };
  lat("host -> guest -> host (host-initiated stream)", host_first);
  lat("guest -> host -> guest (guest-initiated stream)", guest_first);
  lat("Unix socketpair, two threads (the floor)", pair);

  f << "\n## Stream throughput\n\n";
  f << "| direction | MB/s | moss-vsock CPU (s/GiB) | harness CPU (s/GiB) |\n|---|---|---|---|\n";
  auto thr = [&](const char* name, const Throughput& t) {
    f << "| " << name << " | " << fixed(t.mb_per_s, 0) << " | "
      << (t.worker_cpu_per_gib < 0 ? std::string("-") : fixed(t.worker_cpu_per_gib, 3)) << " | "
      << fixed(t.harness_cpu_per_gib, 3) << " |\n";
  };
  thr("host -> guest", to_guest);
  thr("guest -> host", to_host);
  thr("Unix socketpair, two threads (the floor)", pair_stream);
  f << "\nCredit: the worker exceeded the credit the guest granted " << violations
    << " times; packets from the worker the driver found malformed: " << device_errors << ".\n";

  std::string text = f.str();
  if (o.out.empty()) {
    std::cout << text;
  } else {
    std::ofstream(o.out) << text;
  }
  return violations == 0 && device_errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace moss::bench

int main(int argc, char** argv) {
  moss::bench::Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "vsock_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") {
      o.out = value();
    } else if (a == "--where") {
      o.where = value();
    } else if (a == "--iterations") {
      o.iterations = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--mib") {
      o.mib = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--reps") {
      o.reps = std::max(1, std::atoi(value().c_str()));
    } else {
      std::fprintf(stderr, "usage: vsock_bench [--out FILE] [--where TEXT] [--iterations N] [--mib N] [--reps N]\n");
      return 2;
    }
  }
  return moss::bench::run(o);
}
