//! The bounded outbound queue behind `Sender`.

mod common;

use std::time::Duration;

use common::{quick_config, spawn_server, within};
use pylon_ws::client::{self, ClientConfig};
use pylon_ws::{CloseCode, CloseFrame, FullPolicy, Message, TrySendError};
use tokio::sync::mpsc;

async fn connect(addr: std::net::SocketAddr) -> pylon_ws::WebSocket<tokio::net::TcpStream> {
    let config = ClientConfig {
        ws: quick_config().ws,
        ..ClientConfig::default()
    };
    let (ws, _) = within("connect", client::connect(&format!("ws://{addr}/"), config))
        .await
        .unwrap();
    ws
}

/// Receives until the connection ends and returns every message.
async fn drain(mut ws: pylon_ws::WebSocket<tokio::net::TcpStream>) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Some(item) = within("client recv", ws.recv()).await {
        messages.push(item.unwrap());
    }
    messages
}

#[tokio::test]
async fn sender_from_other_task_delivers_in_order() {
    // A small queue with the drop policy: the producer retries each refused message, so
    // nothing is lost and the queue stays bounded.
    let mut config = quick_config();
    config.ws.outbound_capacity = 8;
    config.ws.full_policy = FullPolicy::Drop;
    let addr = spawn_server(config, |mut ws| async move {
        let sender = ws.sender();
        let producer = tokio::spawn(async move {
            for i in 0..200 {
                while let Err(TrySendError::Full(_)) = sender.try_send(Message::text(i.to_string()))
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            sender.close(CloseCode::NORMAL, "all sent");
        });
        while ws.recv().await.is_some() {}
        let _ = producer.await;
    })
    .await;

    let messages = drain(connect(addr).await).await;
    assert_eq!(messages.len(), 201);
    for (i, message) in messages[..200].iter().enumerate() {
        assert_eq!(message, &Message::text(i.to_string()));
    }
    let expected = Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "all sent")));
    assert_eq!(messages[200], expected);
}

#[tokio::test]
async fn full_queue_drop_policy_counts() {
    let mut config = quick_config();
    config.ws.outbound_capacity = 4;
    config.ws.full_policy = FullPolicy::Drop;
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(config, move |mut ws| {
        let result_tx = result_tx.clone();
        async move {
            let sender = ws.sender();
            // Nothing drains the queue until `recv` is polled, so it fills up here.
            let results: Vec<bool> = (0..10)
                .map(|i| sender.try_send(Message::text(format!("m{i}"))).is_ok())
                .collect();
            let _ = result_tx.send((results, sender.dropped(), sender.is_closed()));
            sender.close(CloseCode::NORMAL, "");
            while ws.recv().await.is_some() {}
        }
    })
    .await;

    let messages = drain(connect(addr).await).await;
    let (results, dropped, closed) = within("server result", result_rx.recv()).await.unwrap();
    assert_eq!(
        results,
        [
            true, true, true, true, false, false, false, false, false, false
        ]
    );
    assert_eq!(dropped, 6);
    assert!(!closed);
    let texts: Vec<Message> = ["m0", "m1", "m2", "m3"].map(Message::text).to_vec();
    assert_eq!(&messages[..4], texts.as_slice());
    assert_eq!(messages.len(), 5);
}

#[tokio::test]
async fn full_queue_close_policy_closes() {
    for code in [CloseCode::POLICY_VIOLATION, CloseCode::TRY_AGAIN_LATER] {
        let mut config = quick_config();
        config.ws.outbound_capacity = 4;
        config.ws.full_policy = FullPolicy::Close(code);
        let (result_tx, mut result_rx) = mpsc::unbounded_channel();
        let addr = spawn_server(config, move |mut ws| {
            let result_tx = result_tx.clone();
            async move {
                let sender = ws.sender();
                for i in 0..4 {
                    sender.try_send(Message::text(format!("m{i}"))).unwrap();
                }
                let overflow = sender.try_send(Message::text("overflow"));
                let late = sender.try_send(Message::text("late"));
                let _ = result_tx.send((overflow, late, sender.dropped(), sender.is_closed()));
                while ws.recv().await.is_some() {}
            }
        })
        .await;

        let messages = drain(connect(addr).await).await;
        let (overflow, late, dropped, closed) =
            within("server result", result_rx.recv()).await.unwrap();
        assert_eq!(overflow, Err(TrySendError::Full(Message::text("overflow"))));
        assert_eq!(late, Err(TrySendError::Closed(Message::text("late"))));
        assert_eq!(dropped, 5, "four queued plus the refused one");
        assert!(closed);
        let expected = Message::Close(Some(CloseFrame::new(code, "outbound queue full")));
        assert_eq!(messages, vec![expected], "code {code:?}");
    }
}

#[tokio::test]
async fn sender_close_going_away_reaches_client() {
    let (sender_tx, mut sender_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(quick_config(), move |mut ws| {
        let sender_tx = sender_tx.clone();
        async move {
            let _ = sender_tx.send(ws.sender());
            while ws.recv().await.is_some() {}
        }
    })
    .await;

    let mut ws = connect(addr).await;
    let sender = within("server sender", sender_rx.recv()).await.unwrap();
    sender
        .try_send(Message::text("shutting down soon"))
        .unwrap();
    sender.close(CloseCode::GOING_AWAY, "server shutdown");
    let late = sender.try_send(Message::text("late"));
    assert_eq!(late, Err(TrySendError::Closed(Message::text("late"))));

    let first = within("text", ws.recv()).await.unwrap().unwrap();
    assert_eq!(first, Message::text("shutting down soon"));
    let close = within("close", ws.recv()).await.unwrap().unwrap();
    let expected = Message::Close(Some(CloseFrame::new(
        CloseCode::GOING_AWAY,
        "server shutdown",
    )));
    assert_eq!(close, expected);
    assert!(within("end", ws.recv()).await.is_none());
    assert!(sender.is_closed());
}

#[tokio::test]
async fn sender_closed_when_socket_dropped() {
    let (sender_tx, mut sender_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(quick_config(), move |mut ws| {
        let sender_tx = sender_tx.clone();
        async move {
            let _ = sender_tx.send(ws.sender());
        }
    })
    .await;
    let _ws = connect(addr).await;
    let sender = within("server sender", sender_rx.recv()).await.unwrap();
    // The handler returned and dropped its WebSocket.
    within("closed", async {
        loop {
            match sender.try_send(Message::text("x")) {
                Err(TrySendError::Closed(_)) => break,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    assert!(sender.is_closed());
}
