// The event core: ordering by (time, priority, insertion), idle skipping, and bounded links.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "event_queue.h"

using namespace spatten::hwsim;

namespace {
struct Recorder : Component {
  std::vector<std::string> seen;
  std::vector<Cycle> times;
  Recorder(EventQueue& q) : Component("recorder", q) {}
  void handle(uint32_t kind, uint64_t arg) override {
    seen.push_back(std::to_string(kind) + ":" + std::to_string(arg));
    times.push_back(now());
  }
};
}  // namespace

TEST(EventQueue, OrdersByTimeThenPriorityThenInsertion) {
  EventQueue q;
  Recorder r(q);
  q.schedule(5, &r, 1, 0);
  q.schedule(3, &r, 2, 0, /*priority=*/1);
  q.schedule(3, &r, 3, 0, /*priority=*/0);
  q.schedule(3, &r, 4, 0, /*priority=*/1);
  q.schedule(1000000, &r, 5, 0);
  EXPECT_EQ(q.run(), 5u);
  EXPECT_EQ(r.seen, (std::vector<std::string>{"3:0", "2:0", "4:0", "1:0", "5:0"}));
  // idle time is skipped: 5 events, not a million ticks
  EXPECT_EQ(r.times, (std::vector<Cycle>{3, 3, 3, 5, 1000000}));
}

TEST(EventQueue, SchedulingIntoThePastIsABug) {
  EventQueue q;
  struct Late : Component {
    using Component::Component;
    void handle(uint32_t, uint64_t) override { queue().schedule(now() - 1, this, 0); }
  } late("late", q);
  q.schedule(10, &late, 0);
  EXPECT_THROW(q.run(), std::logic_error);
}

TEST(Link, DeliversAfterLatencyAndRefusesWhenFull) {
  EventQueue q;
  Recorder consumer(q), producer(q);
  Link<int> link(q, /*capacity=*/2, /*latency=*/4, &consumer, /*arrival_kind=*/7);
  link.set_producer(&producer, /*space_kind=*/9, 0);
  EXPECT_TRUE(link.push(10));
  EXPECT_TRUE(link.push(11));
  EXPECT_FALSE(link.push(12));  // back-pressure
  EXPECT_FALSE(link.ready());   // latency not elapsed at t=0
  q.run();
  EXPECT_EQ(consumer.times, (std::vector<Cycle>{4, 4}));
  EXPECT_TRUE(link.ready());
  EXPECT_EQ(link.arrival(0), 4u);
  EXPECT_EQ(link.pop(), 10);
  q.run();
  EXPECT_EQ(producer.seen, (std::vector<std::string>{"9:0"}));  // the producer is woken when space frees
  EXPECT_TRUE(link.push(12));
}
