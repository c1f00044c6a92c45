#include "base/event.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/fd.h"

namespace moss {
namespace {

TEST(Event, RunsItsCallbackAndFreesTheEventWhenDestroyed) {
  EventLoop loop = EventLoop::create().value();
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  int calls = 0;
  {
    Event ev = Event::on_fd(loop.get(), r.get(), EV_READ | EV_PERSIST, [&](int fd, short what) {
      EXPECT_EQ(fd, r.get());
      EXPECT_TRUE(what & EV_READ);
      char c;
      ASSERT_EQ(read(fd, &c, 1), 1);
      calls++;
    });
    ev.add();
    EXPECT_TRUE(ev.pending());
    ASSERT_EQ(write(w.get(), "x", 1), 1);
    loop.run_ready();
    EXPECT_EQ(calls, 1);
    Event moved = std::move(ev);  // The callback's address survives a move.
    EXPECT_FALSE(ev);
    ASSERT_EQ(write(w.get(), "y", 1), 1);
    loop.run_ready();
    EXPECT_EQ(calls, 2);
  }
  // Gone with its owner: a readable fd wakes nothing.
  ASSERT_EQ(write(w.get(), "z", 1), 1);
  loop.run_ready();
  EXPECT_EQ(calls, 2);
}

TEST(Event, ACallbackMayDestroyItsOwnEvent) {
  EventLoop loop = EventLoop::create().value();
  Event ev;
  bool fired = false;
  ev = Event::timer(loop.get(), [&](int, short what) {
    EXPECT_TRUE(what & EV_TIMEOUT);
    fired = true;
    ev.reset();
  });
  ev.add(std::chrono::milliseconds(1));
  loop.dispatch();  // Returns: nothing is left to wait for.
  EXPECT_TRUE(fired);
  EXPECT_FALSE(ev);
}

}  // namespace
}  // namespace moss
