//! A response's output items as the answer comes, and the stream events that say so: a
//! reasoning item while reasoning comes, an assistant message while text comes, and a function
//! call for each call the model makes, each item closed when the next begins, the last when the
//! answer ends.

use crate::http::answer::{AnswerDelta, CallPiece};
use crate::protocol::{
    FunctionCallItem, OutputItem, OutputMessage, OutputPart, OutputText, ReasoningItem,
    ReasoningText, ResponseStreamEvent,
};

/// Stream events as they are made, numbered in order from 0.
#[derive(Default)]
pub(super) struct Events {
    next: u64,
    made: Vec<ResponseStreamEvent>,
}

impl Events {
    /// Add the event `event` makes of the next number.
    pub(super) fn push(&mut self, event: impl FnOnce(u64) -> ResponseStreamEvent) {
        self.made.push(event(self.next));
        self.next += 1;
    }

    /// The events made since the last call.
    pub(super) fn take(&mut self) -> Vec<ResponseStreamEvent> {
        std::mem::take(&mut self.made)
    }
}

/// The two kinds of item that hold text as it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Reasoning,
    Message,
}

/// The output items so far; the last may be open.
pub(super) struct Items {
    request_id: String,
    items: Vec<OutputItem>,
    open: bool,
    reasonings: u32,
    messages: u32,
    calls: u32,
}

impl Items {
    pub(super) fn new(request_id: &str) -> Self {
        Items {
            request_id: request_id.to_owned(),
            items: Vec::new(),
            open: false,
            reasonings: 0,
            messages: 0,
            calls: 0,
        }
    }

    /// Add what one step of the answer released (reasoning, then text, then calls: the order
    /// the parsers release them in), with its events.
    pub(super) fn push(&mut self, delta: AnswerDelta, events: &mut Events) {
        if !delta.reasoning.is_empty() {
            self.text(Text::Reasoning, delta.reasoning, events);
        }
        if !delta.content.is_empty() {
            self.text(Text::Message, delta.content, events);
        }
        for piece in delta.calls {
            self.call(piece, events);
        }
    }

    /// Close the last item in `status` (an answer with no items gets an empty message), and
    /// return the whole output.
    pub(super) fn finish(&mut self, status: &str, events: &mut Events) -> Vec<OutputItem> {
        if self.items.is_empty() {
            self.open_text(Text::Message, events);
        }
        self.close(status, events);
        self.items.clone()
    }

    /// The open item and its place in the output.
    fn open_item(&mut self) -> Option<(u32, &mut OutputItem)> {
        let index = self.items.len().checked_sub(1)? as u32;
        self.items
            .last_mut()
            .filter(|_| self.open)
            .map(|item| (index, item))
    }

    /// More text of `kind`: into the open item of that kind, or a new one.
    fn text(&mut self, kind: Text, text: String, events: &mut Events) {
        let open_kind = match self.open_item() {
            Some((_, OutputItem::Reasoning(_))) => Some(Text::Reasoning),
            Some((_, OutputItem::Message(_))) => Some(Text::Message),
            _ => None,
        };
        if open_kind != Some(kind) {
            self.close("completed", events);
            self.open_text(kind, events);
        }
        let Some((output_index, item)) = self.open_item() else {
            return;
        };
        let Some((item_id, said)) = text_of(item) else {
            return;
        };
        said.push_str(&text);
        events.push(|sequence_number| match kind {
            Text::Reasoning => ResponseStreamEvent::ReasoningTextDelta {
                sequence_number,
                item_id,
                output_index,
                content_index: 0,
                delta: text,
            },
            Text::Message => ResponseStreamEvent::OutputTextDelta {
                sequence_number,
                item_id,
                output_index,
                content_index: 0,
                delta: text,
                logprobs: Vec::new(),
            },
        });
    }

    /// A call's first piece opens its item; each piece adds to its arguments.
    fn call(&mut self, piece: CallPiece, events: &mut Events) {
        if let Some((call_id, name)) = piece.head {
            self.close("completed", events);
            let item = OutputItem::FunctionCall(FunctionCallItem {
                id: format!("fc_{}-{}", self.request_id, self.calls),
                call_id,
                name,
                arguments: String::new(),
                status: "in_progress".to_owned(),
            });
            self.calls += 1;
            self.open(item, events);
        }
        if piece.arguments.is_empty() {
            return;
        }
        if let Some((output_index, OutputItem::FunctionCall(call))) = self.open_item() {
            call.arguments.push_str(&piece.arguments);
            let item_id = call.id.clone();
            events.push(
                |sequence_number| ResponseStreamEvent::FunctionCallArgumentsDelta {
                    sequence_number,
                    item_id,
                    output_index,
                    delta: piece.arguments,
                },
            );
        }
    }

    /// Open a reasoning item or a message, with one text part, empty.
    fn open_text(&mut self, kind: Text, events: &mut Events) {
        let (item, part) = match kind {
            Text::Reasoning => {
                let id = format!("rs_{}-{}", self.request_id, self.reasonings);
                self.reasonings += 1;
                let item = OutputItem::Reasoning(ReasoningItem {
                    id,
                    summary: Vec::new(),
                    content: Vec::new(),
                    status: "in_progress".to_owned(),
                });
                (item, OutputPart::Reasoning(reasoning_text("")))
            }
            Text::Message => {
                let id = match self.messages {
                    0 => format!("msg_{}", self.request_id),
                    later => format!("msg_{}-{later}", self.request_id),
                };
                self.messages += 1;
                let item = OutputItem::Message(OutputMessage {
                    id,
                    status: "in_progress".to_owned(),
                    role: "assistant".to_owned(),
                    content: Vec::new(),
                });
                (item, OutputPart::Output(output_text("")))
            }
        };
        let item_id = item.id().to_owned();
        self.open(item, events);
        let Some((output_index, item)) = self.open_item() else {
            return;
        };
        match item {
            OutputItem::Reasoning(reasoning) => reasoning.content.push(reasoning_text("")),
            OutputItem::Message(message) => message.content.push(output_text("")),
            OutputItem::FunctionCall(_) => return,
        }
        events.push(|sequence_number| ResponseStreamEvent::ContentPartAdded {
            sequence_number,
            item_id,
            output_index,
            content_index: 0,
            part,
        });
    }

    /// Add `item`, empty and in progress, as the open one.
    fn open(&mut self, item: OutputItem, events: &mut Events) {
        let output_index = self.items.len() as u32;
        events.push(|sequence_number| ResponseStreamEvent::OutputItemAdded {
            sequence_number,
            output_index,
            item: item.clone(),
        });
        self.items.push(item);
        self.open = true;
    }

    /// Close the open item, if any, in `status`.
    fn close(&mut self, status: &str, events: &mut Events) {
        let Some((output_index, item)) = self.open_item() else {
            return;
        };
        let reasoning = matches!(item, OutputItem::Reasoning(_));
        match item {
            OutputItem::Reasoning(ReasoningItem { status: said, .. })
            | OutputItem::Message(OutputMessage { status: said, .. }) => {
                *said = status.to_owned();
                let Some((item_id, text)) = text_of(item) else {
                    return;
                };
                let text = text.clone();
                let done_id = item_id.clone();
                let done_text = text.clone();
                events.push(|sequence_number| match reasoning {
                    true => ResponseStreamEvent::ReasoningTextDone {
                        sequence_number,
                        item_id: done_id,
                        output_index,
                        content_index: 0,
                        text: done_text,
                    },
                    false => ResponseStreamEvent::OutputTextDone {
                        sequence_number,
                        item_id: done_id,
                        output_index,
                        content_index: 0,
                        text: done_text,
                        logprobs: Vec::new(),
                    },
                });
                let part = match reasoning {
                    true => OutputPart::Reasoning(reasoning_text(&text)),
                    false => OutputPart::Output(output_text(&text)),
                };
                events.push(|sequence_number| ResponseStreamEvent::ContentPartDone {
                    sequence_number,
                    item_id,
                    output_index,
                    content_index: 0,
                    part,
                });
            }
            OutputItem::FunctionCall(call) => {
                call.status = status.to_owned();
                events.push(
                    |sequence_number| ResponseStreamEvent::FunctionCallArgumentsDone {
                        sequence_number,
                        item_id: call.id.clone(),
                        output_index,
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    },
                );
            }
        }
        let item = item.clone();
        events.push(|sequence_number| ResponseStreamEvent::OutputItemDone {
            sequence_number,
            output_index,
            item,
        });
        self.open = false;
    }
}

/// The id and the text so far of a reasoning item or a message.
fn text_of(item: &mut OutputItem) -> Option<(String, &mut String)> {
    match item {
        OutputItem::Reasoning(reasoning) => {
            let id = reasoning.id.clone();
            reasoning
                .content
                .first_mut()
                .map(|part| (id, &mut part.text))
        }
        OutputItem::Message(message) => {
            let id = message.id.clone();
            message.content.first_mut().map(|part| (id, &mut part.text))
        }
        OutputItem::FunctionCall(_) => None,
    }
}

/// A message's text part saying `text`.
pub(super) fn output_text(text: &str) -> OutputText {
    OutputText {
        kind: "output_text".to_owned(),
        text: text.to_owned(),
        annotations: Vec::new(),
    }
}

/// A reasoning item's text part saying `text`.
fn reasoning_text(text: &str) -> ReasoningText {
    ReasoningText {
        kind: "reasoning_text".to_owned(),
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One step of an answer as the parsers release it: reasoning, text, and a call's first
    /// piece (`Some(name)`) or more of the last call's arguments (`None`), each maybe empty.
    type Step = (String, String, Option<(Option<String>, String)>);

    fn step() -> impl Strategy<Value = Step> {
        let text = prop_oneof!["", "[a-z ]{1,4}"];
        let call = prop::option::of((prop::option::of("[a-z]{1,3}"), "[{}:a-z]{0,3}"));
        (text.clone(), text, call)
    }

    /// The steps as the answer's deltas: each call's pieces carry its index among the calls,
    /// and more arguments come only right after their call's last piece, as in an answer.
    fn deltas(steps: Vec<Step>) -> Vec<AnswerDelta> {
        let mut calls = 0_u32;
        let mut in_call = false;
        let mut deltas = Vec::new();
        for (reasoning, content, call) in steps {
            in_call &= reasoning.is_empty() && content.is_empty();
            let mut delta = AnswerDelta {
                content,
                reasoning,
                calls: Vec::new(),
            };
            match call {
                Some((Some(name), arguments)) => {
                    delta.calls.push(CallPiece {
                        index: calls,
                        head: Some((format!("call-{calls}"), name)),
                        arguments,
                    });
                    calls += 1;
                    in_call = true;
                }
                Some((None, arguments)) if in_call => delta.calls.push(CallPiece {
                    index: calls - 1,
                    head: None,
                    arguments,
                }),
                _ => {}
            }
            deltas.push(delta);
        }
        deltas
    }

    /// What the deltas say, by a naive reading: runs of reasoning and of text, each call with
    /// its arguments, in order (`reasoning`, `message`, or `call` and the name, with the text).
    fn expected(deltas: &[AnswerDelta]) -> Vec<(String, String)> {
        fn say(said: &mut Vec<(String, String)>, kind: &str, text: &str) {
            match said.last_mut() {
                _ if text.is_empty() => {}
                Some((last, joined)) if last == kind => joined.push_str(text),
                _ => said.push((kind.to_owned(), text.to_owned())),
            }
        }
        let mut said: Vec<(String, String)> = Vec::new();
        for delta in deltas {
            say(&mut said, "reasoning", &delta.reasoning);
            say(&mut said, "message", &delta.content);
            for piece in &delta.calls {
                match &piece.head {
                    Some((_, name)) => said.push((format!("call {name}"), piece.arguments.clone())),
                    None => said
                        .last_mut()
                        .expect("a call")
                        .1
                        .push_str(&piece.arguments),
                }
            }
        }
        if said.is_empty() {
            said.push(("message".to_owned(), String::new()));
        }
        said
    }

    /// What an item says, as [`expected`] writes it.
    fn said_by(item: &OutputItem) -> (String, String) {
        match item {
            OutputItem::Reasoning(reasoning) => {
                ("reasoning".to_owned(), reasoning.content[0].text.clone())
            }
            OutputItem::Message(message) => ("message".to_owned(), message.content[0].text.clone()),
            OutputItem::FunctionCall(call) => {
                (format!("call {}", call.name), call.arguments.clone())
            }
        }
    }

    /// The output as a client rebuilds it from the events alone, checking on the way that
    /// they are numbered in order, that one item at a time is open, that each delta and part
    /// goes to an item of its kind, and that each `done` repeats what the deltas built.
    fn replay(events: &[ResponseStreamEvent]) -> Vec<OutputItem> {
        use ResponseStreamEvent as Event;
        let mut items: Vec<OutputItem> = Vec::new();
        let mut open = false;
        for (number, event) in (0..).zip(events) {
            let (sequence_number, index) = match event {
                Event::OutputItemAdded {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::ContentPartAdded {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::OutputTextDelta {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::OutputTextDone {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::ReasoningTextDelta {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::ReasoningTextDone {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::ContentPartDone {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::FunctionCallArgumentsDelta {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::FunctionCallArgumentsDone {
                    sequence_number,
                    output_index,
                    ..
                }
                | Event::OutputItemDone {
                    sequence_number,
                    output_index,
                    ..
                } => (*sequence_number, *output_index as usize),
                other => panic!("an event items do not make: {other:?}"),
            };
            assert_eq!(sequence_number, number);
            if let Event::OutputItemAdded { item, .. } = event {
                assert!(!open, "an item opened before the last was done");
                assert_eq!(index, items.len());
                items.push(item.clone());
                open = true;
                continue;
            }
            assert!(
                open && index + 1 == items.len(),
                "an event for an item not open"
            );
            let item = &mut items[index];
            match (event, item) {
                (
                    Event::ContentPartAdded {
                        part: OutputPart::Output(part),
                        ..
                    },
                    OutputItem::Message(message),
                ) => {
                    message.content.push(part.clone());
                }
                (
                    Event::ContentPartAdded {
                        part: OutputPart::Reasoning(part),
                        ..
                    },
                    OutputItem::Reasoning(reasoning),
                ) => {
                    reasoning.content.push(part.clone());
                }
                (Event::OutputTextDelta { delta, .. }, OutputItem::Message(message)) => {
                    message.content[0].text.push_str(delta);
                }
                (Event::ReasoningTextDelta { delta, .. }, OutputItem::Reasoning(reasoning)) => {
                    reasoning.content[0].text.push_str(delta);
                }
                (
                    Event::FunctionCallArgumentsDelta { delta, item_id, .. },
                    OutputItem::FunctionCall(call),
                ) => {
                    assert_eq!(&call.id, item_id);
                    call.arguments.push_str(delta);
                }
                (Event::OutputTextDone { text, .. }, OutputItem::Message(message)) => {
                    assert_eq!(&message.content[0].text, text);
                }
                (Event::ReasoningTextDone { text, .. }, OutputItem::Reasoning(reasoning)) => {
                    assert_eq!(&reasoning.content[0].text, text);
                }
                (
                    Event::ContentPartDone {
                        part: OutputPart::Output(part),
                        ..
                    },
                    OutputItem::Message(message),
                ) => {
                    assert_eq!(&message.content[0].text, &part.text);
                }
                (
                    Event::ContentPartDone {
                        part: OutputPart::Reasoning(part),
                        ..
                    },
                    OutputItem::Reasoning(reasoning),
                ) => {
                    assert_eq!(&reasoning.content[0].text, &part.text);
                }
                (
                    Event::FunctionCallArgumentsDone { arguments, .. },
                    OutputItem::FunctionCall(call),
                ) => {
                    assert_eq!(&call.arguments, arguments);
                }
                (Event::OutputItemDone { item: done, .. }, item) => {
                    assert_eq!((item.id(), said_by(item)), (done.id(), said_by(done)));
                    *item = done.clone();
                    open = false;
                }
                (event, item) => panic!("{event:?} for {item:?}"),
            }
        }
        assert!(!open, "an item left open");
        items
    }

    proptest! {
        /// Whatever the answer's steps, the output says what they said, in order; the events
        /// rebuild exactly that output; only the last item takes the answer's end status.
        #[test]
        fn the_events_rebuild_the_output_and_the_output_says_the_answer(
            steps in prop::collection::vec(step(), 0..12),
            incomplete in any::<bool>(),
        ) {
            let deltas = deltas(steps);
            let expected = expected(&deltas);
            let mut items = Items::new("r");
            let mut events = Events::default();
            for delta in deltas {
                items.push(delta, &mut events);
            }
            let status = if incomplete { "incomplete" } else { "completed" };
            let output = items.finish(status, &mut events);
            let said: Vec<_> = output.iter().map(said_by).collect();
            prop_assert_eq!(&said, &expected);
            prop_assert_eq!(&replay(&events.take()), &output);
            let statuses: Vec<&str> = output.iter().map(|item| match item {
                OutputItem::Reasoning(reasoning) => reasoning.status.as_str(),
                OutputItem::Message(message) => message.status.as_str(),
                OutputItem::FunctionCall(call) => call.status.as_str(),
            }).collect();
            let (last, earlier) = statuses.split_last().expect("at least one item");
            prop_assert_eq!(*last, status);
            prop_assert!(earlier.iter().all(|status| *status == "completed"));
            let ids: std::collections::HashSet<&str> = output.iter().map(OutputItem::id).collect();
            prop_assert_eq!(ids.len(), output.len(), "item ids are unique");
        }
    }
}
