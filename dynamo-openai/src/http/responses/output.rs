//! A response's output items as the answer comes, and the stream events that say so: an
//! assistant message while text comes and a function call for each call the model makes, each
//! item closed when the next begins, the last when the answer ends.

use crate::http::answer::{AnswerDelta, CallPiece};
use crate::protocol::{
    FunctionCallItem, OutputItem, OutputMessage, OutputText, ResponseStreamEvent,
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

/// The output items so far; the last may be open.
pub(super) struct Items {
    request_id: String,
    items: Vec<OutputItem>,
    open: bool,
    messages: u32,
    calls: u32,
}

impl Items {
    pub(super) fn new(request_id: &str) -> Self {
        Items {
            request_id: request_id.to_owned(),
            items: Vec::new(),
            open: false,
            messages: 0,
            calls: 0,
        }
    }

    /// Add what one step of the answer released, with its events.
    pub(super) fn push(&mut self, delta: AnswerDelta, events: &mut Events) {
        if !delta.content.is_empty() {
            self.text(delta.content, events);
        }
        for piece in delta.calls {
            self.call(piece, events);
        }
    }

    /// Close the last item in `status` (an answer with no items gets an empty message), and
    /// return the whole output.
    pub(super) fn finish(&mut self, status: &str, events: &mut Events) -> Vec<OutputItem> {
        if self.items.is_empty() {
            self.open_message(events);
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

    /// More text: into the open message, or a new one.
    fn text(&mut self, text: String, events: &mut Events) {
        if !matches!(self.open_item(), Some((_, OutputItem::Message(_)))) {
            self.close("completed", events);
            self.open_message(events);
        }
        if let Some((output_index, OutputItem::Message(message))) = self.open_item()
            && let Some(part) = message.content.first_mut()
        {
            part.text.push_str(&text);
            let item_id = message.id.clone();
            events.push(|sequence_number| ResponseStreamEvent::OutputTextDelta {
                sequence_number,
                item_id,
                output_index,
                content_index: 0,
                delta: text,
                logprobs: Vec::new(),
            });
        }
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

    /// Open a message with one text part, empty.
    fn open_message(&mut self, events: &mut Events) {
        let id = match self.messages {
            0 => format!("msg_{}", self.request_id),
            later => format!("msg_{}-{later}", self.request_id),
        };
        self.messages += 1;
        let message = OutputMessage {
            id: id.clone(),
            status: "in_progress".to_owned(),
            role: "assistant".to_owned(),
            content: Vec::new(),
        };
        self.open(OutputItem::Message(message), events);
        if let Some((output_index, OutputItem::Message(message))) = self.open_item() {
            message.content.push(output_text(""));
            events.push(|sequence_number| ResponseStreamEvent::ContentPartAdded {
                sequence_number,
                item_id: id,
                output_index,
                content_index: 0,
                part: output_text(""),
            });
        }
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
        match item {
            OutputItem::Message(message) => {
                message.status = status.to_owned();
                let part = message.content.first().cloned().unwrap_or(output_text(""));
                let item_id = message.id.clone();
                let text = part.text.clone();
                events.push(|sequence_number| ResponseStreamEvent::OutputTextDone {
                    sequence_number,
                    item_id: item_id.clone(),
                    output_index,
                    content_index: 0,
                    text,
                    logprobs: Vec::new(),
                });
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

/// A text part saying `text`.
pub(super) fn output_text(text: &str) -> OutputText {
    OutputText {
        kind: "output_text".to_owned(),
        text: text.to_owned(),
        annotations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One step of an answer: text, a call's first piece, more of the last call's arguments,
    /// or text and a call in one step (as a parser releases them).
    #[derive(Debug, Clone)]
    enum Step {
        Text(String),
        Call(String, String),
        Arguments(String),
        TextThenCall(String, String, String),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            "[a-z ]{0,4}".prop_map(Step::Text),
            ("[a-z]{1,3}", "[{}:a-z]{0,3}")
                .prop_map(|(name, arguments)| Step::Call(name, arguments)),
            "[{}:a-z]{0,3}".prop_map(Step::Arguments),
            ("[a-z ]{0,4}", "[a-z]{1,3}", "[{}:a-z]{0,3}")
                .prop_map(|(text, name, arguments)| Step::TextThenCall(text, name, arguments)),
        ]
    }

    /// The steps as the answer's deltas: each call's pieces carry its index among the calls.
    /// As an answer does, more arguments come only right after their call's last piece.
    fn deltas(steps: &[Step]) -> Vec<AnswerDelta> {
        let mut calls = 0_u32;
        let mut in_call = false;
        let mut deltas = Vec::new();
        for step in steps {
            let mut delta = AnswerDelta::default();
            match step {
                Step::Text(text) => {
                    in_call &= text.is_empty();
                    delta.content = text.clone();
                }
                Step::TextThenCall(text, name, arguments) => {
                    delta.content = text.clone();
                    delta.calls.push(CallPiece {
                        index: calls,
                        head: Some((format!("call-{calls}"), name.clone())),
                        arguments: arguments.clone(),
                    });
                    calls += 1;
                    in_call = true;
                }
                Step::Call(name, arguments) => {
                    in_call = true;
                    delta.calls.push(CallPiece {
                        index: calls,
                        head: Some((format!("call-{calls}"), name.clone())),
                        arguments: arguments.clone(),
                    });
                    calls += 1;
                }
                Step::Arguments(arguments) if in_call => delta.calls.push(CallPiece {
                    index: calls - 1,
                    head: None,
                    arguments: arguments.clone(),
                }),
                Step::Arguments(_) => {}
            }
            deltas.push(delta);
        }
        deltas
    }

    /// What the steps say, by a naive reading: runs of text as messages, each call with its
    /// arguments, in order (`None` for a message's text, the name for a call).
    fn expected(steps: &[Step]) -> Vec<(Option<String>, String)> {
        fn text(said: &mut Vec<(Option<String>, String)>, text: &str) {
            match said.last_mut() {
                _ if text.is_empty() => {}
                Some((None, joined)) => joined.push_str(text),
                _ => said.push((None, text.to_owned())),
            }
        }
        let mut said: Vec<(Option<String>, String)> = Vec::new();
        for step in steps {
            match step {
                Step::Text(said_text) => text(&mut said, said_text),
                Step::Call(name, arguments) => said.push((Some(name.clone()), arguments.clone())),
                Step::Arguments(arguments) => {
                    if let Some((Some(_), call)) = said.last_mut() {
                        call.push_str(arguments);
                    }
                }
                Step::TextThenCall(said_text, name, arguments) => {
                    text(&mut said, said_text);
                    said.push((Some(name.clone()), arguments.clone()));
                }
            }
        }
        if said.is_empty() {
            said.push((None, String::new()));
        }
        said
    }

    /// The output as a client rebuilds it from the events alone, checking on the way that
    /// they are numbered in order, that one item at a time is open, and that each `done`
    /// repeats what the deltas built.
    fn replay(events: &[ResponseStreamEvent]) -> Vec<OutputItem> {
        let mut items: Vec<OutputItem> = Vec::new();
        let mut open = false;
        for (number, event) in (0..).zip(events) {
            match event {
                ResponseStreamEvent::OutputItemAdded {
                    sequence_number,
                    output_index,
                    item,
                } => {
                    assert_eq!(*sequence_number, number);
                    assert!(!open, "an item opened before the last was done");
                    assert_eq!(*output_index as usize, items.len());
                    items.push(item.clone());
                    open = true;
                }
                ResponseStreamEvent::ContentPartAdded {
                    sequence_number,
                    output_index,
                    part,
                    ..
                } => {
                    assert_eq!(*sequence_number, number);
                    let Some(OutputItem::Message(message)) = items.get_mut(*output_index as usize)
                    else {
                        panic!("a part added to no message");
                    };
                    message.content.push(part.clone());
                }
                ResponseStreamEvent::OutputTextDelta {
                    sequence_number,
                    output_index,
                    delta,
                    ..
                } => {
                    assert_eq!(*sequence_number, number);
                    let Some(OutputItem::Message(message)) = items.get_mut(*output_index as usize)
                    else {
                        panic!("text for no message");
                    };
                    message.content[0].text.push_str(delta);
                }
                ResponseStreamEvent::FunctionCallArgumentsDelta {
                    sequence_number,
                    output_index,
                    delta,
                    item_id,
                } => {
                    assert_eq!(*sequence_number, number);
                    let Some(OutputItem::FunctionCall(call)) =
                        items.get_mut(*output_index as usize)
                    else {
                        panic!("arguments for no call");
                    };
                    assert_eq!(&call.id, item_id);
                    call.arguments.push_str(delta);
                }
                ResponseStreamEvent::OutputTextDone {
                    sequence_number,
                    output_index,
                    text,
                    ..
                } => {
                    assert_eq!(*sequence_number, number);
                    let Some(OutputItem::Message(message)) = items.get(*output_index as usize)
                    else {
                        panic!("text done for no message");
                    };
                    assert_eq!(&message.content[0].text, text);
                }
                ResponseStreamEvent::ContentPartDone {
                    sequence_number, ..
                } => assert_eq!(*sequence_number, number),
                ResponseStreamEvent::FunctionCallArgumentsDone {
                    sequence_number,
                    output_index,
                    arguments,
                    ..
                } => {
                    assert_eq!(*sequence_number, number);
                    let Some(OutputItem::FunctionCall(call)) = items.get(*output_index as usize)
                    else {
                        panic!("arguments done for no call");
                    };
                    assert_eq!(&call.arguments, arguments);
                }
                ResponseStreamEvent::OutputItemDone {
                    sequence_number,
                    output_index,
                    item,
                } => {
                    assert_eq!(*sequence_number, number);
                    assert!(open && *output_index as usize + 1 == items.len());
                    let built = &items[*output_index as usize];
                    assert_eq!(built.id(), item.id());
                    let (built, done) = (said_by(built), said_by(item));
                    assert_eq!(built, done);
                    items[*output_index as usize] = item.clone();
                    open = false;
                }
                other => panic!("an event items do not make: {other:?}"),
            }
        }
        assert!(!open, "an item left open");
        items
    }

    /// What an item says: `None` and the text for a message, the name and arguments for a call.
    fn said_by(item: &OutputItem) -> (Option<String>, String) {
        match item {
            OutputItem::Message(message) => (None, message.content[0].text.clone()),
            OutputItem::FunctionCall(call) => (Some(call.name.clone()), call.arguments.clone()),
        }
    }

    proptest! {
        /// Whatever the answer's steps, the output says what they said, in order; the events
        /// rebuild exactly that output; only the last item takes the answer's end status.
        #[test]
        fn the_events_rebuild_the_output_and_the_output_says_the_answer(
            steps in prop::collection::vec(step(), 0..12),
            incomplete in any::<bool>(),
        ) {
            let mut items = Items::new("r");
            let mut events = Events::default();
            for delta in deltas(&steps) {
                items.push(delta, &mut events);
            }
            let status = if incomplete { "incomplete" } else { "completed" };
            let output = items.finish(status, &mut events);
            let said: Vec<_> = output.iter().map(said_by).collect();
            prop_assert_eq!(&said, &expected(&steps));
            prop_assert_eq!(&replay(&events.take()), &output);
            let statuses: Vec<&str> = output.iter().map(|item| match item {
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
