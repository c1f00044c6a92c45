// A test child for launcher_test: enters its (unjailed) sandbox as spawn_child() requires,
// then prints, for each fd number in argv, "N TARGET" (what /proc/self/fd/N points to) on
// stderr, and "open K" with how many fds it has beyond 0-2.
#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "policies/sandbox.h"

int main(int argc, char** argv) {
  moss::sandbox::enter(moss::sandbox::Role("vcpu"));
  for (int i = 1; i < argc; i++) {
    std::string link = std::string("/proc/self/fd/") + argv[i];
    char target[512];
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    std::fprintf(stderr, "%s %s\n", argv[i], n < 0 ? "closed" : std::string(target, static_cast<size_t>(n)).c_str());
  }
  int open_fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = std::atoi(e->d_name);
      if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d)) open_fds++;
    }
    closedir(d);
  }
  std::fprintf(stderr, "open %d\n", open_fds);
  return 0;
}
