// Discrete-event core: events ordered by (time, priority, insertion sequence), so a run is deterministic by
// construction. Time jumps from event to event; idle cycles are never ticked.
#pragma once

#include <cstdint>
#include <deque>
#include <queue>
#include <string>
#include <utility>
#include <vector>

namespace spatten::hwsim {

using Cycle = uint64_t;

class Component;

struct Event {
  Cycle time;
  int32_t priority;  // lower runs first at equal time
  uint64_t sequence;
  Component* target;
  uint32_t kind;
  uint64_t arg;
};

class EventQueue {
 public:
  // Schedules target->handle(kind, arg) at `time`; scheduling into the past is a simulator bug and throws.
  void schedule(Cycle time, Component* target, uint32_t kind, uint64_t arg = 0, int32_t priority = 0);
  // Runs until the queue is empty; returns the number of events handled.
  uint64_t run();
  Cycle now() const { return now_; }
  uint64_t events_handled() const { return handled_; }
  bool empty() const { return heap_.empty(); }

 private:
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      if (a.time != b.time) return a.time > b.time;
      if (a.priority != b.priority) return a.priority > b.priority;
      return a.sequence > b.sequence;
    }
  };
  std::priority_queue<Event, std::vector<Event>, Later> heap_;
  Cycle now_ = 0;
  uint64_t sequence_ = 0;
  uint64_t handled_ = 0;
};

// A simulated hardware block. Components talk only through events and links that carry a latency.
class Component {
 public:
  Component(std::string name, EventQueue& queue) : name_(std::move(name)), queue_(queue) {}
  virtual ~Component() = default;
  Component(const Component&) = delete;
  Component& operator=(const Component&) = delete;

  virtual void handle(uint32_t kind, uint64_t arg) = 0;
  const std::string& name() const { return name_; }
  // Cycles this block spent doing work (for the per-module busy fraction).
  double busy_cycles() const { return busy_cycles_; }

 protected:
  EventQueue& queue() { return queue_; }
  Cycle now() const { return queue_.now(); }
  double busy_cycles_ = 0;

 private:
  std::string name_;
  EventQueue& queue_;
};

// A bounded FIFO between two components. An item pushed at time t becomes visible to the consumer at
// t + latency (the consumer gets `arrival_kind` then); a full link refuses pushes, which is how back-pressure
// reaches the producer, who is woken with `space_kind` when the consumer pops.
template <class T>
class Link {
 public:
  Link(EventQueue& queue, size_t capacity, Cycle latency, Component* consumer, uint32_t arrival_kind)
      : queue_(queue), capacity_(capacity), latency_(latency), consumer_(consumer), arrival_kind_(arrival_kind) {}

  void set_producer(Component* producer, uint32_t space_kind, uint64_t space_arg = 0) {
    producer_ = producer;
    space_kind_ = space_kind;
    space_arg_ = space_arg;
  }
  bool full() const { return items_.size() >= capacity_; }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return capacity_; }
  Cycle latency() const { return latency_; }

  // Returns false (and does nothing) when the link is full.
  bool push(T item) {
    if (full()) return false;
    const Cycle ready = queue_.now() + latency_;
    items_.emplace_back(ready, std::move(item));
    queue_.schedule(ready, consumer_, arrival_kind_);
    return true;
  }
  // Items whose latency has elapsed, oldest first.
  bool ready() const { return !items_.empty() && items_.front().first <= queue_.now(); }
  size_t ready_count() const {
    size_t n = 0;
    for (const auto& it : items_) n += it.first <= queue_.now();
    return n;
  }
  T& item(size_t i) { return items_[i].second; }
  Cycle arrival(size_t i) const { return items_[i].first; }
  T pop() { return take(0); }
  // Removes item i (FR-FCFS picks out of order); wakes the producer.
  T take(size_t i) {
    T out = std::move(items_[i].second);
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
    if (producer_) queue_.schedule(queue_.now(), producer_, space_kind_, space_arg_);
    return out;
  }

 private:
  EventQueue& queue_;
  size_t capacity_;
  Cycle latency_;
  Component* consumer_;
  uint32_t arrival_kind_;
  Component* producer_ = nullptr;
  uint32_t space_kind_ = 0;
  uint64_t space_arg_ = 0;
  std::deque<std::pair<Cycle, T>> items_;
};

}  // namespace spatten::hwsim
