#include "tests/kvm/needs.h"

#include <map>

#include "tests/support/subprocess.h"

namespace moss::test {
namespace {

std::map<std::string, Needs>& declared() {
  static std::map<std::string, Needs> all;
  return all;
}

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

bool declare_needs(const char* suite, const char* name, Needs needs) {
  declared()[std::string(suite) + "." + name] = needs;
  return true;
}

bool boots_linux(const std::vector<std::string>& argv, const std::string& guests_dir) {
  if (argv.size() < 2 || basename_of(argv[0]) != "moss" || argv[1] != "run") return false;
  std::string kernel;
  for (size_t i = 2; i < argv.size() && argv[i] != "--"; i++) {
    if (argv[i] == "--kernel" && i + 1 < argv.size()) {
      kernel = argv[++i];
    } else if (argv[i].rfind("--kernel=", 0) == 0) {
      kernel = argv[i].substr(9);
    }
  }
  if (kernel.empty()) return true;  // The default guest: Debian's kernel.
  std::string prefix = guests_dir + "/";
  return kernel.compare(0, prefix.size(), prefix) != 0;
}

void check_declared_needs(const std::string& guests_dir) {
  set_spawn_check([guests_dir](const std::vector<std::string>& argv) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    if (info == nullptr) return;
    std::string name = std::string(info->test_suite_name()) + "." + info->name();
    auto it = declared().find(name);
    if (it == declared().end()) {
      ADD_FAILURE() << name << " is declared with TEST: declare it KVM_TEST or LINUX_TEST (tests/kvm/needs.h) so "
                    << "that it is routed to a host that can run it";
    } else if (it->second == Needs::kKvm && boots_linux(argv, guests_dir)) {
      ADD_FAILURE() << name << " boots Linux but is declared KVM_TEST, so on a PVM host it would run directly, where "
                    << "Linux cannot run: declare it LINUX_TEST (tests/kvm/needs.h)";
    }
  });
}

}  // namespace moss::test
