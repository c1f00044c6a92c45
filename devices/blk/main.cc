// moss-blk: the virtio-blk vhost-user backend. Everything is in the library (cli.h).
#include "devices/blk/cli.h"
#include "policies/sandbox.h"

int main(int argc, char** argv) {
  // Before anything else: the jail moss's launcher began (policies/sandbox.h). Started by
  // hand (another VMM), it returns without one.
  moss::sandbox::enter(moss::sandbox::Role::kBlk);
  return moss::blk::blk_main(argc, argv);
}
