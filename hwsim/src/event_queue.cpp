#include "event_queue.h"

#include <stdexcept>

namespace spatten::hwsim {

void EventQueue::schedule(Cycle time, Component* target, uint32_t kind, uint64_t arg, int32_t priority) {
  if (time < now_) {
    throw std::logic_error("event scheduled in the past for " + target->name() + " (at " + std::to_string(time) +
                           ", now " + std::to_string(now_) + ")");
  }
  heap_.push(Event{time, priority, sequence_++, target, kind, arg});
}

uint64_t EventQueue::run() {
  uint64_t n = 0;
  while (!heap_.empty()) {
    const Event ev = heap_.top();
    heap_.pop();
    now_ = ev.time;
    ev.target->handle(ev.kind, ev.arg);
    ++n;
  }
  handled_ += n;
  return n;
}

}  // namespace spatten::hwsim
