// What the benches share: the monotonic clock, the broker's --stats file, medians and the
// cells of a results table.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace moss::bench {

// CLOCK_MONOTONIC in milliseconds: the clock of the broker's --stats instants.
inline double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// The numbers of a `moss run --stats FILE` JSON file, by key (nested keys flattened).
inline std::map<std::string, double> read_stats(const std::string& path) {
  std::map<std::string, double> m;
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : text) {
    if (c == '{' || c == '}' || c == ',' || c == ':' || c == '"') c = ' ';
  }
  std::istringstream in(text);
  std::string key;
  double v;
  while (in >> key >> v) m[key] = v;
  return m;
}

// The median, or -1 (printed "n/a") for no figures.
inline double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline std::string fmt(double v, const char* unit) {
  if (v < 0) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, "%.1f %s", v, unit);
  return b;
}

// a / b as "0.42x", or "n/a" when either is missing.
inline std::string ratio(double a, double b) {
  if (a <= 0 || b <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", a / b);
  return buf;
}

}  // namespace moss::bench
